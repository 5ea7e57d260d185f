"""A site's free text (sold-as, collection site) gets the checks notes get (issue 14)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from testing.builders import drug_check
from tests.ingest.conftest import MakeSite, problem

PHONE = "call +1 206 555 0199 now"
EMAIL = "write to refunds@lookout-refund.example"


@pytest.mark.parametrize(("field", "value"), [("sold_as", PHONE), ("collection_site", EMAIL),
                                              ("notes", PHONE)])
def test_contact_details_in_a_results_free_text_are_refused(
        ingest_client: TestClient, make_site: MakeSite, field: str, value: str) -> None:
    response = ingest_client.post("/v1/drug-checks", json=drug_check(**{field: value}),
                                  headers=make_site("Site T"))
    assert response.status_code == 422
    [error] = problem(response)["errors"]
    assert error["field"] == f"/{field}"
    assert "phone numbers or e-mail addresses" in error["message"]


def test_contact_details_in_a_reports_sold_as_are_refused(
        ingest_client: TestClient, make_site: MakeSite) -> None:
    body = {"source": "ems", "occurred_at": "2026-11-01T12:00:00Z",
            "location": {"postal_code": "98104"}, "sold_as": PHONE}
    response = ingest_client.post("/v1/overdose-reports", json=body,
                                  headers=make_site("Site T"))
    assert response.status_code == 422
    assert [e["field"] for e in problem(response)["errors"]] == ["/sold_as"]
    ok = ingest_client.post("/v1/overdose-reports", json={**body, "sold_as": "down"},
                            headers=make_site("Site U"))
    assert ok.status_code == 202, ok.text
