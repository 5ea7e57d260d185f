"""API fuzzing from the published OpenAPI document (schemathesis, bounded): no 5xx on any
operation, and nothing accepted that breaks the documented schema or the ingest rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from services.ingest.api import app
from services.ingest.schemas import EMAIL_RE, PHONE_RE
from shared.settings import Settings
from tests.ingest.conftest import MakeSite

EXAMPLES_PER_MODE = 150  # over every operation: 300 requests per database
SINGLE = {"/v1/drug-checks": "DrugCheckIn", "/v1/overdose-reports": "OverdoseReportIn"}
TIME_FIELDS = ("collected_at", "tested_at", "occurred_at")


def _validators() -> dict[str, Any]:
    components = app.openapi()["components"]
    return {path: jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": components})
        for path, name in SINGLE.items()}


def _acceptable(path: str, item: Any, validators: dict[str, Any]) -> bool:
    """Could this item rightly be accepted? The schema, and the rules it cannot express."""
    if not validators[path].is_valid(item):
        return False
    latest = datetime.now(UTC) + timedelta(minutes=5, seconds=5)
    for name in TIME_FIELDS:
        if item.get(name) is not None:
            when = datetime.fromisoformat(str(item[name]).replace("Z", "+00:00"))
            if when.tzinfo is None or when > latest:
                return False
    notes = item.get("notes") or ""
    return not (EMAIL_RE.search(notes) or PHONE_RE.search(notes))


def _items(body: Any) -> list[Any]:
    if isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ("results", "reports"):
        return list(next(iter(body.values())))
    return list(body) if isinstance(body, list) else [body]


def test_fuzzing_the_openapi_document_gives_no_5xx_and_accepts_nothing_invalid(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    site = make_site("fuzz")
    admin = {"Authorization": f"Bearer {ingest_settings.admin_token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    validators = _validators()
    seen: dict[str, int] = {}

    def check(case: Any, mode: GenerationMode) -> None:
        headers = admin if case.path.startswith("/v1/admin") else site
        if mode is GenerationMode.POSITIVE and case.method == "POST" and case.path in SINGLE:
            # random postal codes almost never exist: give most items a real place, so
            # that the acceptance path is fuzzed too
            for i, item in enumerate(_items(case.body)):
                if isinstance(item, dict) and isinstance(item.get("location"), dict) and i % 4:
                    item["location"] = {"postal_code": "98104"}
        response = case.call(headers=headers)
        key = f"{case.method} {case.path} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1
        assert response.status_code < 500, (case.path, case.body, response.text)
        if case.method != "POST" or case.path not in SINGLE or response.status_code >= 300:
            return
        body = response.json()
        sent = _items(case.body)
        if "items" in body:  # a batch: each accepted or duplicate item must be valid
            for item in body["items"]:
                if item["status"] != "rejected":
                    assert _acceptable(case.path, sent[item["index"]], validators), item
        else:
            assert _acceptable(case.path, case.body, validators), case.body

    def fuzz(mode: GenerationMode) -> None:
        # derandomize: the same examples on every run, so the shared CI is not made red
        # by a new random find; run with more examples by hand to hunt (see docs/ingest.md)
        @hypothesis_settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=schema.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            check(case, mode)

        run()

    fuzz(GenerationMode.POSITIVE)
    fuzz(GenerationMode.NEGATIVE)
    # the fuzzing reached the submission endpoints, and some submissions got through
    posts = {k for k in seen if k.startswith("POST /v1/drug-checks ")
             or k.startswith("POST /v1/overdose-reports ")}
    assert posts, seen
    assert any(re.search(r"^POST /v1/(drug-checks|overdose-reports) 202$", k) for k in seen)
