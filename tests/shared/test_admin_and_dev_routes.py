"""Exposure outside dev: failed admin-token attempts are throttled per client and logged
(`shared.web.require_admin`, every service), and `/dev/*` routes do not exist."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.alerts.api import app as alerts_app
from services.ingest.api import app as ingest_app
from services.referrals.api import app as referrals_app
from shared.officials import new_key_pair
from shared.settings import Settings, get_settings
from tests.conftest import MigratedSqlite


@pytest.fixture
def prod_like(tmp_path: Path, migrated_sqlite: MigratedSqlite) -> Settings:
    """Test settings but with env=prod (copied: the prod checks are the settings' own test)."""
    url = migrated_sqlite(tmp_path / "lookout.db")
    private, public = new_key_pair()  # prod requires the dashboard's own key pair
    return Settings(env="test", var_dir=tmp_path, database_url=url).model_copy(
        update={"env": "prod", "admin_failures_burst": 3, "admin_failures_per_minute": 1,
                "dashboard_signing_key": private, "dashboard_public_key": public})


@contextmanager
def client_of(app: FastAPI, settings: Settings,
              address: str = "198.51.100.4") -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app, client=(address, 40000)) as client:
            yield client
    finally:
        app.dependency_overrides.clear()


def _failures(outcome: str) -> float:
    return REGISTRY.get_sample_value("lookout_admin_auth_failures_total",
                                     {"outcome": outcome}) or 0.0


def test_failed_admin_tokens_are_throttled_per_client_and_logged(
    prod_like: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shared.web")
    refused, throttled = _failures("refused"), _failures("throttled")
    wrong = {"Authorization": "Bearer not-the-token"}
    right = {"Authorization": f"Bearer {prod_like.admin_token}"}
    with client_of(alerts_app, prod_like) as client:
        assert client.get("/v1/alerts").status_code == 401  # no token: not a guess
        statuses = [client.get("/v1/alerts", headers=wrong).status_code for _ in range(6)]
        assert statuses == [403, 403, 403, 429, 429, 429]
        # Throttled, even the right token is not looked at (a guess would not be either).
        answer = client.get("/v1/alerts", headers=right)
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    with client_of(alerts_app, prod_like, address="198.51.100.5") as other:
        assert other.get("/v1/alerts", headers=right).status_code == 200  # another client
    # The same mechanism guards every service's admin endpoints.
    with client_of(ingest_app, prod_like, address="198.51.100.6") as ingest:
        assert [ingest.get("/v1/admin/sites", headers=wrong).status_code for _ in range(4)] == \
            [403, 403, 403, 429]
    assert _failures("refused") - refused == 6
    assert _failures("throttled") - throttled == 5
    logged = [r.getMessage() for r in caplog.records if r.name == "shared.web"]
    assert logged == ["admin token refused"] * 2 + ["admin token refused; client throttled"] \
        + ["admin token refused"] * 2 + ["admin token refused; client throttled"]
    assert all("198.51.100" not in str(r.__dict__) for r in caplog.records)


def test_dev_routes_are_absent_outside_dev(prod_like: Settings) -> None:
    admin = {"Authorization": f"Bearer {prod_like.admin_token}"}
    with client_of(alerts_app, prod_like) as alerts:
        for path in ("/dev/outbox", "/dev/outbox.json"):
            answer, unknown = alerts.get(path), alerts.get(path + "-no-such-page")
            assert (answer.status_code, answer.json()) == (404, {
                **unknown.json(), "instance": path}), path
        assert "/dev/outbox" not in alerts.get("/openapi.json").text
    with client_of(referrals_app, prod_like) as referrals:
        assert referrals.get("/dev/outbox.json", headers=admin).status_code == 404


def test_guessing_the_admin_token_through_referrals_staff_endpoints_is_throttled(
    prod_like: Settings,
) -> None:
    """Referrals' staff endpoints take the admin token or a site key: wrong tokens there
    count against the same per-client throttle as the admin endpoints."""
    wrong = {"Authorization": "Bearer not-a-key-nor-the-token"}
    right = {"Authorization": f"Bearer {prod_like.admin_token}"}
    refused = _failures("refused")
    path = "/v1/referrals/00000000-0000-0000-0000-000000000000"
    with client_of(referrals_app, prod_like, address="198.51.100.7") as client:
        statuses = [client.get(path, headers=wrong).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        assert client.get(path, headers=right).status_code == 429  # not even looked at
    with client_of(referrals_app, prod_like, address="198.51.100.8") as other:
        assert other.get(path, headers=right).status_code == 404  # the token works
    assert _failures("refused") - refused == 3
