"""What shared/web.py gives every service: the answer comes after the commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.alerts.api import app as alerts_app
from services.alerts.models import Alert
from services.alerts.service.signals import alert_from_signal
from services.ingest.api import app as ingest_app
from services.referrals.api import app as referrals_app
from services.referrals.models import Service
from shared.db import session_scope
from shared.settings import Settings, get_settings
from testing.builders import contamination_signal
from tests.credentials import official_headers
from tests.referrals.helpers import load_directory

ADMIN = {"Authorization": "Bearer dev-admin-token"}


@contextmanager
def client_of(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        app.dependency_overrides.clear()


@contextmanager
def failing_commits() -> Iterator[None]:
    """Every commit in the block fails, as a full disk or a lost connection would."""
    def refuse(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(Session, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", refuse)


def assert_server_error(response: Any) -> None:
    """The client is told (before the fix it got the handler's 201/200: the answer left
    before the commit, which then failed unseen)."""
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_ingest_a_failed_commit_is_the_answer(settings: Settings) -> None:
    with client_of(ingest_app, settings) as client:
        created = client.post("/v1/admin/sites", json={"name": "Site A"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        keys = f"/v1/admin/sites/{created.json()['site_id']}/keys"
        assert len(client.get(keys, headers=ADMIN).json()) == 1  # found right after the 201
        with failing_commits():
            response = client.post(keys, json={"scopes": ["results"]}, headers=ADMIN)
        assert_server_error(response)
        assert len(client.get(keys, headers=ADMIN).json()) == 1


def test_ingest_a_revoked_key_is_refused_at_once(settings: Settings) -> None:
    with client_of(ingest_app, settings) as client:
        created = client.post("/v1/admin/sites", json={"name": "Site B"}, headers=ADMIN).json()
        key = {"Authorization": f"Bearer {created['api_key']}"}
        assert client.get("/v1/submissions", headers=key).status_code == 200  # now cached
        [row] = client.get(f"/v1/admin/sites/{created['site_id']}/keys", headers=ADMIN).json()
        with failing_commits():
            revoked = client.post(f"/v1/admin/sites/{created['site_id']}/keys/{row['id']}"
                                  "/revoke", headers=ADMIN)
        assert_server_error(revoked)
        assert client.get("/v1/submissions", headers=key).status_code == 200  # not revoked
        revoked = client.post(f"/v1/admin/sites/{created['site_id']}/keys/{row['id']}/revoke",
                              headers=ADMIN)
        assert revoked.status_code == 200, revoked.text
        assert client.get("/v1/submissions", headers=key).status_code == 401


def test_alerts_a_failed_commit_is_the_answer(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings,
                                                 contamination_signal(severity="warning"))
        alert_id, before = alert.id, alert.status
    with client_of(alerts_app, settings) as client:
        with failing_commits():
            response = client.post(f"/v1/alerts/{alert_id}/reject",
                                   json={"reason": "not confirmed"},
                                   headers=official_headers(settings, "ana"))
        assert_server_error(response)
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalars(select(Alert.status).where(Alert.id == alert_id)).one() == before


def test_referrals_a_failed_commit_is_the_answer(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        service_id = session.scalars(select(Service.id).where(Service.accepting)
                                     .order_by(Service.id)).first()
    assert service_id is not None
    with client_of(referrals_app, settings) as client:
        with failing_commits():
            response = client.patch(f"/v1/providers/services/{service_id}",
                                    json={"accepting": False}, headers=ADMIN)
        assert_server_error(response)
        listed = {s["id"]: s for s in client.get("/v1/providers/services",
                                                 headers=ADMIN).json()}
        assert listed[service_id]["accepting"] is True

