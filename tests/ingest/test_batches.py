"""Batches of results: per-item statuses, one transaction, the same idempotency rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.models import DrugCheck, OutboxMessage
from services.ingest.schemas import BatchOut
from shared.db import session_scope
from shared.settings import Settings
from testing.builders import drug_check
from tests.ingest.conftest import DATA_ROWS, MakeSite, problem


def _count(settings: Settings, model: type, *where: Any) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_a_batch_accepts_the_valid_items_and_rejects_the_invalid_ones_by_index(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("A")
    items = [
        drug_check("b-0"),
        drug_check("b-1", collected_at="2026-01-01T10:00:00"),  # no zone
        drug_check("b-2", location={"postal_code": "00000"}),  # unknown place
        drug_check("b-3", notes="text me at +1 206 555 0100"),
        "not an object",
        drug_check("b-5", location={"city": "Vancouver", "state": "BC"}),
    ]
    response = ingest_client.post("/v1/drug-checks", json={"results": items}, headers=auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert BatchOut.model_validate(body).model_dump(mode="json") == body  # built by hand
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 0, 4)
    statuses = [(i["index"], i["status"], i["reason"]) for i in body["items"]]
    assert statuses == [(0, "accepted", None), (1, "rejected", "validation"),
                        (2, "rejected", "location"), (3, "rejected", "validation"),
                        (4, "rejected", "validation"), (5, "accepted", None)]
    assert [e["field"] for e in body["items"][1]["errors"]] == ["/collected_at"]
    assert body["items"][2]["errors"][0]["field"] == "/location"
    assert body["items"][5]["region_id"] == "ca/bc/vancouver-coastal/vancouver"
    assert _count(ingest_settings, DrugCheck) == 2
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        messages = session.scalars(select(OutboxMessage).where(DATA_ROWS)
                                   .order_by(OutboxMessage.id)).all()
        assert [json.loads(m.payload)["sample_id"] for m in messages] == ["b-0", "b-5"]


def test_a_json_array_is_a_batch_and_a_repeat_is_all_duplicates(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("A")
    items = [drug_check(f"a-{i}") for i in range(50)]
    first = ingest_client.post("/v1/drug-checks", json=items, headers=auth)
    assert first.status_code == 202
    again = ingest_client.post("/v1/drug-checks", json=items, headers=auth)
    assert again.status_code == 200
    assert again.json()["duplicate"] == 50
    assert [i["id"] for i in again.json()["items"]] == [i["id"] for i in first.json()["items"]]
    assert _count(ingest_settings, OutboxMessage, DATA_ROWS) == 50


def test_within_a_batch_and_against_earlier_ones_other_content_is_a_conflict(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("A")
    stored = ingest_client.post("/v1/drug-checks", json=drug_check("c-0"), headers=auth).json()
    batch = [drug_check("c-0", sold_as="heroin"), drug_check("c-1"),
             drug_check("c-1", sold_as="heroin")]
    body = ingest_client.post("/v1/drug-checks", json={"results": batch}, headers=auth).json()
    assert [i["status"] for i in body["items"]] == ["rejected", "accepted", "rejected"]
    assert body["items"][0]["reason"] == "conflict"
    assert body["items"][0]["existing_id"] == stored["id"]
    assert body["items"][2]["existing_id"] == body["items"][1]["id"]
    assert _count(ingest_settings, DrugCheck) == 2


@pytest.mark.parametrize("payload", [{"results": []}, {"results": [{}] * 1001},
                                     {"results": [], "extra": 1}, {"results": "x"}])
def test_a_batch_of_the_wrong_shape_or_size_is_a_422_problem(
    ingest_client: TestClient, make_site: MakeSite, payload: object
) -> None:
    response = ingest_client.post("/v1/drug-checks", json=payload, headers=make_site("A"))
    assert response.status_code == 422
    assert problem(response)["errors"]


def test_a_batch_of_a_thousand_is_stored_with_its_outbox_rows_in_order(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("A")
    items = [drug_check(f"k-{i:04d}") for i in range(1000)]
    response = ingest_client.post("/v1/drug-checks", json=items, headers=auth)
    assert response.status_code == 202
    assert response.json()["accepted"] == 1000
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        payloads = session.scalars(select(OutboxMessage.payload).where(DATA_ROWS)
                                  .order_by(OutboxMessage.id))
        assert [json.loads(p)["sample_id"] for p in payloads] == [i["sample_id"] for i in items]


def test_submissions_are_counted_by_outcome_and_a_fixed_reason(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    from services.ingest.metrics import REASONS

    auth = make_site("A")
    items = [drug_check("m-0"), drug_check("m-1", location={"postal_code": "00000"}), {}]
    ingest_client.post("/v1/drug-checks", json=items, headers=auth)
    ingest_client.post("/v1/drug-checks", json=items[:1], headers=auth)
    ingest_client.post("/v1/drug-checks", json=drug_check(), headers={"Authorization": "x"})
    text = ingest_client.get("/metrics").text
    samples = re.findall(r'^lookout_ingest_submissions_total\{kind="(\w+)",outcome="(\w+)",'
                         r'reason="(\w+)"\} ([\d.]+)$', text, re.MULTILINE)
    seen = {(k, o, r) for k, o, r, v in samples if float(v) > 0}
    assert {("drug_check", "accepted", "none"), ("drug_check", "duplicate", "none"),
            ("drug_check", "rejected", "location"), ("drug_check", "rejected", "validation"),
            ("drug_check", "rejected", "unauthorized")} <= seen
    assert {r for _k, _o, r, _v in samples} <= set(REASONS)
