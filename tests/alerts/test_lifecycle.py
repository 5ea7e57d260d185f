"""Alert lifecycle: merge, escalation, per-region policy, expiry, and the officials' API
(approve, edit with segment counts, reject, cancel, update, all-clear) with its audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.alerts import service
from services.alerts.api import app
from services.alerts.models import Alert, Delivery
from shared.db import session_scope, utcnow
from shared.settings import Settings, get_settings
from tests.alerts.test_service import add_subscriber
from tests.builders import contamination_signal


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def _auth(settings: Settings, actor: str | None = "dr.ops") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    if actor:
        headers["X-Actor"] = actor
    return headers


def _draft(settings: Settings, region: str = "us/wa/king-county/98104") -> uuid.UUID:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = service.alert_from_signal(session, settings,
                                          contamination_signal(region, severity="warning"))
        assert alert.status == "draft"
        return alert.id


def test_signals_for_one_region_and_substance_merge_and_escalate(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        first = service.alert_from_signal(session, settings,
                                          contamination_signal(severity="info"))
        second = service.alert_from_signal(session, settings,
                                           contamination_signal(severity="warning"))
        assert second.id == first.id and second.signal_count == 2
        assert second.severity == "warning" and second.status == "draft"
        third = service.alert_from_signal(session, settings, contamination_signal())
        assert third.id == first.id and third.severity == "critical"
        assert third.status == "approved"  # critical: auto-approved by the default policy
        assert "(critical)" in third.body_en
        other = service.alert_from_signal(session, settings,
                                          contamination_signal("us/wa/king-county/98105"))
        assert other.id != first.id
        assert session.scalar(select(func.count()).select_from(Alert)) == 2


def test_no_merge_outside_the_window(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        first = service.alert_from_signal(session, settings,
                                          contamination_signal(severity="warning"))
        first.created_at = utcnow() - timedelta(hours=7)
    with session_scope(settings.sqlalchemy_url) as session:
        again = service.alert_from_signal(session, settings,
                                          contamination_signal(severity="warning"))
        assert again.id != first.id


def test_policy_per_region_prefix(settings: Settings) -> None:
    policy = settings.model_copy(update={
        "alert_policy_json": '{"us/wa": ["warning", "critical"], "us/wa/pierce-county": []}'})
    assert service.auto_approves(policy, "warning", "us/wa/king-county/98104")
    assert not service.auto_approves(policy, "critical", "us/wa/pierce-county/98402")
    assert not service.auto_approves(policy, "warning", "us/or/multnomah-county/97201")
    assert service.auto_approves(policy, "critical", "us/or/multnomah-county/97201")
    dev = settings.model_copy(update={"env": "dev"})
    assert service.auto_approves(dev, "info", "us/or")


def test_an_expired_alert_is_not_fanned_out(settings: Settings) -> None:
    add_subscriber(settings, "+12065550161", "us/wa/king-county/98104")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = service.alert_from_signal(session, settings, contamination_signal())
        alert.expires_at = utcnow() - timedelta(seconds=1)
        assert service.fan_out(session, alert) == 0
        assert alert.status == "expired"
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_review_queue_edit_approve_with_audit(client: TestClient, settings: Settings) -> None:
    alert_id = _draft(settings)
    queue = client.get("/v1/alerts?status=draft", headers=_auth(settings)).json()
    assert [a["id"] for a in queue] == [str(alert_id)]
    assert queue[0]["segments"]["en"] == 1

    long_text = "Fentanyl found in cocaine. " * 13  # > 306 characters: 3 segments
    response = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": long_text}},
                            headers=_auth(settings))
    assert response.status_code == 422
    assert response.json()["segments"]["en"] == 3
    forced = client.patch(f"/v1/alerts/{alert_id}",
                          json={"texts": {"en": long_text}, "force": True},
                          headers=_auth(settings))
    assert forced.status_code == 200 and forced.json()["segments"]["en"] == 3
    short = "Lookout ALERT: fentanyl in cocaine in 98104. Start low. Reply STOP to cancel."
    edited = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": short}},
                          headers=_auth(settings)).json()
    assert edited["texts"]["en"] == short and edited["segments"]["en"] == 1

    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers=_auth(settings, actor=None)).status_code == 422  # who?
    approved = client.post(f"/v1/alerts/{alert_id}/approve", headers=_auth(settings))
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["approved_by"] == "dr.ops"
    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers=_auth(settings)).status_code == 409

    detail = client.get(f"/v1/alerts/{alert_id}", headers=_auth(settings)).json()
    actions = [(a["actor"], a["action"]) for a in detail["audit"]]
    assert actions == [("system", "create"), ("dr.ops", "edit"), ("dr.ops", "edit"),
                       ("dr.ops", "approve")]
    last_edit = detail["audit"][2]
    assert last_edit["before"]["texts"]["en"] == long_text.strip()
    assert last_edit["after"]["texts"]["en"] == short


def test_approve_refuses_a_text_over_two_segments_unless_forced(
    client: TestClient, settings: Settings
) -> None:
    alert_id = _draft(settings)
    client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"es": "x" * 400}, "force": True},
                 headers=_auth(settings))
    refused = client.post(f"/v1/alerts/{alert_id}/approve", headers=_auth(settings))
    assert refused.status_code == 422 and refused.json()["segments"]["es"] == 3
    ok = client.post(f"/v1/alerts/{alert_id}/approve", json={"force": True},
                     headers=_auth(settings))
    assert ok.status_code == 200


def test_reject_and_cancel(client: TestClient, settings: Settings) -> None:
    rejected = _draft(settings)
    body = client.post(f"/v1/alerts/{rejected}/reject", json={"actor": "dr.b"},
                       headers=_auth(settings, actor=None)).json()
    assert body["status"] == "rejected"

    add_subscriber(settings, "+12065550162", "us/wa/king-county/98105")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = service.alert_from_signal(session, settings,
                                          contamination_signal("us/wa/king-county/98105"))
        assert service.fan_out(session, alert) == 1
        sending = alert.id
    cancelled = client.post(f"/v1/alerts/{sending}/cancel", headers=_auth(settings)).json()
    assert cancelled["status"] == "cancelled"
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(Delivery.status)) == "skipped"


def test_update_and_all_clear_are_new_drafts(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        parent = service.alert_from_signal(session, settings, contamination_signal()).id
    update = client.post(f"/v1/alerts/{parent}/update", headers=_auth(settings))
    assert update.status_code == 201
    assert update.json()["kind"] == "update" and update.json()["status"] == "draft"
    assert update.json()["texts"]["en"].startswith("UPDATE: ")
    clear = client.post(f"/v1/alerts/{parent}/all-clear", headers=_auth(settings)).json()
    assert clear["kind"] == "all_clear" and clear["parent_id"] == str(parent)
    assert "over" in clear["texts"]["en"] and "STOP" in clear["texts"]["fr"]
    assert all(n <= 2 for n in clear["segments"].values())


def test_lifecycle_needs_the_admin_token(client: TestClient, settings: Settings) -> None:
    alert_id = _draft(settings)
    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers={"X-Actor": "x"}).status_code == 401
    assert client.get(f"/v1/alerts/{uuid.uuid4()}", headers=_auth(settings)).status_code == 404


def test_worker_housekeeping_fans_out_approved_expires_and_finishes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.alerts import agents

    monkeypatch.setattr(agents, "settings", settings)
    add_subscriber(settings, "+12065550171", "us/wa/king-county/98104")
    approved = _draft(settings)
    expiring = _draft(settings, "us/wa/king-county/98105")
    with session_scope(settings.sqlalchemy_url) as session:
        service.approve(session, approved, "dr.ops")
        row = session.get(Alert, expiring)
        assert row is not None
        row.expires_at = utcnow() - timedelta(minutes=1)
    assert agents._housekeeping() == [approved]
    assert agents._fan_out(approved) is True  # what the dispatcher does next
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.get(Alert, expiring).status == "expired"  # type: ignore[union-attr]
        delivery = session.scalar(select(Delivery).where(Delivery.alert_id == approved))
        assert delivery is not None and delivery.status == "pending"
        delivery.status = "queued"
    assert agents._housekeeping() == []
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.get(Alert, approved).status == "sent"  # type: ignore[union-attr]
