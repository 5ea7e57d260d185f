"""Overdose reports: one or a batch, Idempotency-Key, no names, outbox on the reports topic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.models import OutboxMessage, OverdoseReport
from shared.db import session_scope
from shared.settings import Settings
from tests.ingest.conftest import DATA_ROWS, MakeSite, problem


def report(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": "ems",
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=30)).isoformat(),
        "location": {"postal_code": "98104"},
        "fatal": "no",
        "naloxone_doses": 2,
        "suspected_substances": ["Fentanyl HCl", "benzos", "mystery powder X"],
        "sold_as": "Down (Unknown Opioid)",
    }
    body.update(overrides)
    return body


def _reports(settings: Settings) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(OverdoseReport)) or 0)


def test_a_report_is_normalized_and_goes_out_on_the_reports_topic(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    response = ingest_client.post("/v1/overdose-reports", json=report(),
                                  headers=make_site("EMS", ["reports"]))
    assert response.status_code == 202, response.text
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        (message,) = session.scalars(select(OutboxMessage).where(DATA_ROWS)).all()
    assert message.topic == "overdose.reports.v1"
    assert message.key == "us/wa"  # keyed by state: every spike area in one partition
    event = json.loads(message.payload)
    assert event["report_id"] == response.json()["id"]
    assert event["fatal"] == "no" and event["naloxone_doses"] == 2
    assert "fentanyl" in event["suspected_substance_ids"]
    assert event["sold_as_class"] == "opioid"
    statuses = {s["raw"]: s["status"] for s in event["suspected_substances"]}
    assert statuses["mystery powder X"] == "unrecognized"  # kept raw, flagged


def test_idempotency_key_same_content_same_id_other_content_409(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("EMS", ["reports"])
    body = report()
    first = ingest_client.post("/v1/overdose-reports", json=body,
                               headers={**auth, "Idempotency-Key": "run-17"})
    again = ingest_client.post("/v1/overdose-reports", json=body,
                               headers={**auth, "Idempotency-Key": "run-17"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "duplicate"
    other = ingest_client.post("/v1/overdose-reports", json={**body, "fatal": "yes"},
                               headers={**auth, "Idempotency-Key": "run-17"})
    assert other.status_code == 409
    assert problem(other)["existing_id"] == first.json()["id"]
    # without a key every POST is a new report
    ingest_client.post("/v1/overdose-reports", json=body, headers=auth)
    assert _reports(ingest_settings) == 2


def test_a_batch_of_reports_with_a_key_is_idempotent_per_item(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = {**make_site("ED", ["reports"]), "Idempotency-Key": "batch-1"}
    items = [report(source="ed"), report(fatal="yes"), report(location={"postal_code": "1"})]
    first = ingest_client.post("/v1/overdose-reports", json={"reports": items}, headers=auth)
    assert first.status_code == 202
    assert [i["status"] for i in first.json()["items"]] == ["accepted", "accepted", "rejected"]
    again = ingest_client.post("/v1/overdose-reports", json=items, headers=auth)
    assert [i["status"] for i in again.json()["items"]] == ["duplicate", "duplicate", "rejected"]
    assert _reports(ingest_settings) == 2


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "Jane Doe"}, "/name"),
    ({"patient_name": "x"}, "/patient_name"),
    ({"address": "1 Main St"}, "/address"),
    ({"source": "police"}, "/source"),
    ({"fatal": "maybe"}, "/fatal"),
    ({"naloxone_doses": -1}, "/naloxone_doses"),
    ({"occurred_at": "2026-03-01T10:00:00"}, "/occurred_at"),
    ({"occurred_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}, "/occurred_at"),
    ({"suspected_substances": ["x" * 201]}, "/suspected_substances"),
    ({"location": {"city": "Atlantis", "state": "ZZ"}}, "/location"),
])
def test_invalid_reports_are_422_naming_the_field(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite,
    change: dict[str, Any], field: str,
) -> None:
    response = ingest_client.post("/v1/overdose-reports", json=report(**change),
                                  headers=make_site("EMS", ["reports"]))
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in problem(response)["errors"]]
    assert _reports(ingest_settings) == 0


def test_reports_need_the_reports_scope(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    response = ingest_client.post("/v1/overdose-reports", json=report(),
                                  headers=make_site("lab", ["results"]))
    assert response.status_code == 403
    problem(response)
