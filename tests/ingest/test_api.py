"""The ingest API against real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.api import app
from services.ingest.models import DrugCheck, OutboxMessage
from services.ingest.service.sites import create_site
from shared.db import session_scope
from shared.settings import Settings, get_settings
from shared.topics import SITE_KEYS
from testing.builders import drug_check
from tests.ingest.conftest import DATA_ROWS


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def _site(settings: Settings, name: str, scopes: list[str] | None = None) -> dict[str, str]:
    with session_scope(settings.sqlalchemy_url) as session:
        _, key = create_site(session, name, scopes or ["results", "reports"])
    return {"Authorization": f"Bearer {key}"}


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status"} <= body.keys()
    return dict(body)


def test_accepts_a_result_and_writes_its_outbox_row_in_the_same_transaction(
    client: TestClient, settings: Settings
) -> None:
    auth = _site(settings, "A")
    response = client.post("/v1/drug-checks", json=drug_check("s1"), headers=auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["region_id"] == "us/wa/king-county/98104"
    with session_scope(settings.sqlalchemy_url) as session:
        outbox = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert [m.topic for m in outbox] == [SITE_KEYS.name, "drugcheck.results.v1"]
        outbox = outbox[1:]  # after the site's key announcement
        assert outbox[0].topic == "drugcheck.results.v1"
        assert outbox[0].key == "us/wa/king-county/98104"
        event = json.loads(outbox[0].payload)
        assert event["event_id"] == body["event_id"]
        found = {s["substance_id"] for s in event["substances"]}
        assert found == {"cocaine", "fentanyl"}
        assert event["sold_as_id"] == "cocaine"


def test_same_sample_again_is_a_duplicate_and_other_content_a_conflict(
    client: TestClient, settings: Settings
) -> None:
    auth = _site(settings, "A")
    payload = drug_check("s1")
    first = client.post("/v1/drug-checks", json=payload, headers=auth)
    again = client.post("/v1/drug-checks", json=payload, headers=auth)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "duplicate"
    changed = client.post("/v1/drug-checks", json={**payload, "sold_as": "heroin"},
                          headers=auth)
    assert changed.status_code == 409
    assert _problem(changed)["existing_id"] == first.json()["id"]
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(DATA_ROWS)) == 1
        assert session.scalar(select(func.count()).select_from(DrugCheck)) == 1


def test_same_sample_id_from_two_sites_are_two_results(
    client: TestClient, settings: Settings
) -> None:
    a, b = _site(settings, "A"), _site(settings, "B")
    assert client.post("/v1/drug-checks", json=drug_check("s1"), headers=a).status_code == 202
    assert client.post("/v1/drug-checks", json=drug_check("s1"), headers=b).status_code == 202


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer lk_wrong"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_key_is_401_problem(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/drug-checks", json=drug_check(), headers=headers)
    assert response.status_code == 401
    assert _problem(response)["status"] == 401


def test_key_without_the_scope_is_403(client: TestClient, settings: Settings) -> None:
    auth = _site(settings, "reports only", ["reports"])
    response = client.post("/v1/drug-checks", json=drug_check(), headers=auth)
    assert response.status_code == 403
    _problem(response)


def test_malformed_json_is_400_problem(client: TestClient, settings: Settings) -> None:
    auth = _site(settings, "A")
    response = client.post("/v1/drug-checks", content=b'{"sample_id": ',
                           headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 400
    _problem(response)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "/colour"),
        ({"collected_at": "2026-01-01T10:00:00"}, "/collected_at"),
        ({"collected_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()},
         "/collected_at"),
        ({"notes": "call me on +1 206 555 0100"}, "/notes"),
        ({"notes": "write to someone@example.org"}, "/notes"),
        ({"sample_id": ""}, "/sample_id"),
        ({"location": {}}, "/location"),
        ({"location": {"postal_code": "00000"}}, "/location"),
        ({"substances": [{"name": "x" * 500}]}, "/substances/0/name"),
    ],
)
def test_invalid_fields_are_named_in_a_422_problem(
    client: TestClient, settings: Settings, change: dict[str, Any], field: str
) -> None:
    auth = _site(settings, "A")
    response = client.post("/v1/drug-checks", json=drug_check(**change), headers=auth)
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in _problem(response)["errors"]]
    assert field in fields
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(DrugCheck)) == 0


def test_a_site_cannot_read_another_sites_result(client: TestClient, settings: Settings) -> None:
    a, b = _site(settings, "A"), _site(settings, "B")
    created = client.post("/v1/drug-checks", json=drug_check(), headers=a).json()
    assert client.get(f"/v1/drug-checks/{created['id']}", headers=a).status_code == 200
    other = client.get(f"/v1/drug-checks/{created['id']}", headers=b)
    assert other.status_code == 404
    _problem(other)


def test_admin_creates_sites_and_the_key_works(client: TestClient, settings: Settings) -> None:
    denied = client.post("/v1/admin/sites", json={"name": "X"},
                         headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 403
    made = client.post("/v1/admin/sites", json={"name": "X", "scopes": ["results"]},
                       headers={"Authorization": f"Bearer {settings.admin_token}"})
    assert made.status_code == 201
    key = made.json()["api_key"]
    ok = client.post("/v1/drug-checks", json=drug_check(),
                     headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 202


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    client.get("/v1/drug-checks/00000000-0000-0000-0000-000000000000")
    metrics = client.get("/metrics").text
    assert 'route="/v1/drug-checks/{result_id}"' in metrics
    assert "00000000-0000" not in metrics


def test_cli_refuses_a_taken_site_name(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from services import cli
    from services.cli import accounts

    monkeypatch.setattr(accounts, "get_settings", lambda: settings)
    assert cli.main(["sites", "create", "Same"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]  # the key alone, last line
    from services.ingest.service.sites import authenticate

    with session_scope(settings.sqlalchemy_url) as session:
        assert authenticate(session, key, "results").scopes == ("results", "reports")
    assert cli.main(["sites", "create", "Same"]) == 1
    assert "exists already" in capsys.readouterr().err


def test_a_canary_result_carries_the_flag_to_its_event(
    client: TestClient, settings: Settings
) -> None:
    auth = _site(settings, "A")
    plain = client.post("/v1/drug-checks", json=drug_check("c-0"), headers=auth).json()
    canary = client.post("/v1/drug-checks", json=drug_check("c-1", canary=True),
                         headers=auth).json()
    events = {e["event"]["sample_id"]: e["event"] for e in (
        client.get(f"/v1/drug-checks/{r['id']}", headers=auth).json() for r in (plain, canary))}
    assert (events["c-0"]["canary"], events["c-1"]["canary"]) == (False, True)


@pytest.mark.parametrize("change", [{"sample_id": "a\u0000b"}, {"sold_as": "\u0000"},
                                    {"substances": [{"name": "x\u0000"}]}])
def test_nul_characters_are_a_422_not_a_database_error(
    client: TestClient, settings: Settings, change: dict[str, Any]
) -> None:
    """Found by fuzzing: PostgreSQL text cannot hold NUL (it was a 500 there)."""
    auth = _site(settings, "A")
    single = client.post("/v1/drug-checks", json=drug_check(**change), headers=auth)
    assert single.status_code == 422
    batch = client.post("/v1/drug-checks", json=[drug_check(**change)], headers=auth)
    assert batch.status_code == 200
    assert batch.json()["items"][0]["reason"] == "validation"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_a_nul_is_found_whatever_the_body_encoding(
    client: TestClient, settings: Settings, encoding: str
) -> None:
    """The API skips the models' per-field NUL check when the body's bytes show no NUL
    (services/ingest/api.py `_validation_context`); a body in UTF-16 or UTF-32 (JSON
    allows them) must not slip through that shortcut, nor an escaped NUL in UTF-8."""
    auth = {**_site(settings, "A"), "Content-Type": "application/json"}
    body = json.dumps(drug_check(notes="a\u0000b"))  # a NUL, written \u0000
    assert "\\u0000" in body
    single = client.post("/v1/drug-checks", content=body.encode(encoding), headers=auth)
    assert single.status_code == 422, single.text
    assert single.json()["errors"][0]["field"] == "/notes"
    clean = json.dumps(drug_check(notes="a b")).encode(encoding)
    assert client.post("/v1/drug-checks", content=clean, headers=auth).status_code == 202
