"""Twilio status callbacks (signature-checked) and the dev outbox, over real HTTP routing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from services.alerts import webhooks
from services.alerts.api import app
from services.alerts.models import Delivery, DevOutboxMessage, EarlyStatus
from services.alerts.service.fanout import fan_out, pending_deliveries
from services.alerts.service.signals import alert_from_signal
from services.alerts.service.statuses import apply_early_statuses, record_status
from shared.db import session_scope, utcnow
from shared.settings import Settings, get_settings
from testing.builders import contamination_signal
from tests.alerts.conftest import PUBLIC
from tests.alerts.test_service import add_subscriber


def _queued_delivery(settings: Settings) -> uuid.UUID:
    add_subscriber(settings, "+12065550121", "us/wa/king-county/98104")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, contamination_signal())
        fan_out(session, alert)
        delivery = next(iter(pending_deliveries(session, alert.id)))[0]
        delivery.status, delivery.provider_sid = "queued", "SM" + "a" * 32
        return delivery.id


def _signed(settings: Settings, params: dict[str, str]) -> dict[str, str]:
    validator = RequestValidator(settings.twilio_auth_token)
    return {"X-Twilio-Signature": validator.compute_signature(f"{PUBLIC}/v1/sms/status",
                                                              params)}


def test_signed_status_callback_updates_the_delivery(
    client: TestClient, public_settings: Settings
) -> None:
    delivery_id = _queued_delivery(public_settings)
    for status in ("sent", "delivered", "sent"):  # the late "sent" must not go backwards
        params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status}
        response = client.post("/v1/sms/status", data=params,
                               headers=_signed(public_settings, params))
        assert response.status_code == 204
    with session_scope(public_settings.sqlalchemy_url) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None and delivery.status == "delivered"
    assert 'lookout_alerts_sms_status_total{status="delivered"}' in client.get("/metrics").text


@pytest.mark.parametrize("signature", [None, "forged", "wrong-for-these-params"])
def test_unsigned_or_forged_callbacks_are_refused(
    client: TestClient, public_settings: Settings, signature: str | None
) -> None:
    delivery_id = _queued_delivery(public_settings)
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": "delivered"}
    headers = {}
    if signature == "forged":
        headers = {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
    elif signature:
        headers = _signed(public_settings, {**params, "MessageStatus": "failed"})
    response = client.post("/v1/sms/status", data=params, headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    with session_scope(public_settings.sqlalchemy_url) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None and delivery.status == "queued"


def test_operator_views_need_the_admin_token(client: TestClient,
                                            public_settings: Settings) -> None:
    assert client.get("/v1/deliveries").status_code == 401
    assert client.get("/v1/alerts", headers={"Authorization": "Bearer x"}).status_code == 403
    _queued_delivery(public_settings)
    auth = {"Authorization": f"Bearer {public_settings.admin_token}"}
    rows = client.get("/v1/deliveries", headers=auth).json()
    assert len(rows) == 1 and rows[0]["status"] == "queued"
    assert "+1206" not in str(rows)


def test_dev_outbox_shows_masked_numbers(client: TestClient, public_settings: Settings) -> None:
    with session_scope(public_settings.sqlalchemy_url) as session:
        session.add(DevOutboxMessage(sid="DEV1", to_encrypted="x", to_masked="••••••••••21",
                                     body="Lookout ALERT test", segments=1))
    page = client.get("/dev/outbox")
    assert page.status_code == 200 and "Lookout ALERT test" in page.text
    assert client.get("/dev/outbox.json").json()[0]["to"] == "••••••••••21"


@pytest.mark.parametrize(("status", "code"), [("undelivered", "30003"), ("undelivered", "30005"),
                                              ("failed", "30008")])
def test_undelivered_callbacks_keep_the_carrier_error(
    client: TestClient, public_settings: Settings, status: str, code: str
) -> None:
    delivery_id = _queued_delivery(public_settings)
    params = {"MessageSid": "SM" + "a" * 32, "MessageStatus": status, "ErrorCode": code}
    response = client.post("/v1/sms/status", data=params,
                           headers=_signed(public_settings, params))
    assert response.status_code == 204
    with session_scope(public_settings.sqlalchemy_url) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        assert (delivery.status, delivery.error_code) == (status, code)


def test_a_callback_before_the_sid_is_recorded_is_kept_and_applied_later(
    client: TestClient, public_settings: Settings
) -> None:
    """Twilio can call back before the sender has recorded the SID it got: the callback is
    kept, and the worker's housekeeping applies it once a delivery holds that SID."""
    delivery_id = _queued_delivery(public_settings)
    early_sid = "SM" + "b" * 32
    for status in ("delivered", "sent"):  # out of order: the later status is kept
        params = {"MessageSid": early_sid, "MessageStatus": status}
        response = client.post("/v1/sms/status", data=params,
                               headers=_signed(public_settings, params))
        assert response.status_code == 204
    with session_scope(public_settings.sqlalchemy_url) as session:
        assert apply_early_statuses(session) == 0  # no delivery holds it yet
        early = session.get(EarlyStatus, early_sid)
        assert early is not None and early.status == "delivered"
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        delivery.provider_sid = early_sid  # what the sender's record does
    with session_scope(public_settings.sqlalchemy_url) as session:
        assert apply_early_statuses(session) == 1
    with session_scope(public_settings.sqlalchemy_url) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None and delivery.status == "delivered"
        assert session.get(EarlyStatus, early_sid) is None
        assert apply_early_statuses(session) == 0
    assert 'lookout_alerts_sms_status_outcomes_total{outcome="early"}' in \
        client.get("/metrics").text


def test_early_callbacks_nobody_claims_are_dropped_after_a_day(public_settings: Settings) -> None:
    with session_scope(public_settings.sqlalchemy_url) as session:
        assert record_status(session, "SMold", "delivered", None) == "early"
        assert record_status(session, "SMnew", "sent", None) == "early"
        old = session.get(EarlyStatus, "SMold")
        assert old is not None
        old.received_at = utcnow() - timedelta(days=1, seconds=1)
    with session_scope(public_settings.sqlalchemy_url) as session:
        apply_early_statuses(session)
        assert session.get(EarlyStatus, "SMold") is None
        assert session.get(EarlyStatus, "SMnew") is not None


def test_concurrent_callbacks_share_transactions_and_all_apply(
    public_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of callbacks (a fan-out's): each is answered only once committed, and the
    ones that arrive while a batch is written share the next transaction."""
    for i in range(30):
        add_subscriber(public_settings, f"+1206555{1000 + i:04d}", "us/wa/king-county/98104")
    with session_scope(public_settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, public_settings, contamination_signal())
        fan_out(session, alert)
        sids = []
        for i, delivery in enumerate(next(iter(pending_deliveries(session, alert.id)))):
            delivery.status, delivery.provider_sid = "queued", f"SM{i:032d}"
            sids.append(delivery.provider_sid)
    batches: list[int] = []
    real = webhooks.store_statuses

    def counting(session: Session, items: Sequence[tuple[str, str, str | None]],
                 looked_up: object = None) -> list[str]:
        batches.append(len(items))
        return real(session, items, looked_up)

    monkeypatch.setattr(webhooks, "store_statuses", counting)
    app.dependency_overrides[get_settings] = lambda: public_settings
    params = [{"MessageSid": sid, "MessageStatus": status}
              for status in ("sent", "delivered") for sid in [*sids, "SMunknown"]]

    async def flood() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            answers = await asyncio.gather(*(
                client.post("/v1/sms/status", data=p, headers=_signed(public_settings, p))
                for p in params))
        return [a.status_code for a in answers]

    try:
        assert asyncio.run(flood()) == [204] * len(params)
    finally:
        app.dependency_overrides.clear()
    assert sum(batches) == len(params) and len(batches) < len(params)
    with session_scope(public_settings.sqlalchemy_url) as session:
        statuses = session.scalars(select(Delivery.status).where(Delivery.provider_sid.in_(sids)))
        assert set(statuses) == {"delivered"}
        early = session.get(EarlyStatus, "SMunknown")
        assert early is not None and early.status == "delivered"
