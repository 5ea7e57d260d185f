"""Provider notices by SMS to the provider's own number: the real twilio SDK against the fake
Twilio server, and the dev outbox; only consented fields in the text; errors without the
number; the admin API checks the number."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.alerts.models import DevOutboxMessage as AlertsDevOutbox
from services.referrals import agents, service, texts
from services.referrals import models as m
from services.referrals.api import app
from services.referrals.notify import ChannelNotifier
from shared.crypto import decrypt_phone
from shared.db import session_scope
from shared.gsm import is_gsm7, segment_count
from shared.settings import Settings, get_settings
from testing.twilio_server import FakeTwilioServer
from tests.referrals.helpers import TUESDAY_10AM, load_directory, reply, requested

SID = "AC" + "7" * 32
TOKEN = "referrals-sms-notice-token"
PROVIDER = "+12065550142"  # fictional
CALLBACK = "+12065550177"  # fictional
ADMIN = {"Authorization": "Bearer dev-admin-token"}


@pytest.fixture
def twilio() -> Iterator[FakeTwilioServer]:
    with FakeTwilioServer(account_sid=SID, auth_token=TOKEN) as server:
        yield server


def _twilio_settings(settings: Settings, twilio: FakeTwilioServer) -> Settings:
    return settings.model_copy(update={
        "sms_backend": "twilio", "twilio_account_sid": SID, "twilio_auth_token": TOKEN,
        "twilio_api_base_url": twilio.url, "public_alerts_url": "http://127.0.0.1:9/alerts"})


def _hand_off(settings: Settings, shared_fields: list[str],
              number: str = PROVIDER) -> tuple[uuid.UUID, str]:
    """A staff referral to the Harbor clinic, whose notices go by SMS to `number`."""
    load_directory(settings.sqlalchemy_url, webhook=None)
    with session_scope(settings.sqlalchemy_url) as session:
        harbor = session.get(m.Service, "svc-harbor-bup")
        assert harbor is not None
        harbor.notify_channel, harbor.notify_address = "sms", number
    with session_scope(settings.sqlalchemy_url) as session:
        referral = service.create_referral(
            session, settings, source="staff", now=TUESDAY_10AM, actor="staff",
            consent=service.ConsentIn(shared_fields, "read to the person", "staff"),
            service_types=["buprenorphine"], language="es", region_id="us/wa/king-county/98104",
            payment="medicaid", age=34, text="prefers mornings", callback_phone=CALLBACK)
        service.offer_options(session, settings, referral, TUESDAY_10AM)
        assert referral.options[0]["service_id"] == "svc-harbor-bup"
        handoff = service.choose(session, referral, 1, "staff", TUESDAY_10AM)
    with session_scope(settings.sqlalchemy_url) as session:  # as the API: choice committed
        status = service.hand_off(session, settings, ChannelNotifier(settings), handoff,
                                  TUESDAY_10AM)
    return handoff.referral_id, status


def test_the_provider_gets_an_sms_through_twilio_with_only_the_consented_fields(
        settings: Settings, twilio: FakeTwilioServer) -> None:
    tw = _twilio_settings(settings, twilio)
    referral_id, status = _hand_off(tw, ["service_type", "language", "callback_phone"])
    assert status == "sent"
    [message] = twilio.messages(to=PROVIDER)
    body = message["body"]
    assert body.startswith("Lookout referral: a person chose Harbor Street Bupe Walk-in.")
    assert "Needs: buprenorphine" in body and "Language: Spanish" in body
    assert f"Call back: {CALLBACK}" in body
    assert f"Update: http://127.0.0.1:8002/r/{referral_id}?t=" in body
    for withheld in ("mornings", "Age:", "medicaid", "Payment:", "Area:", "98104"):
        assert withheld not in body
    assert is_gsm7(body) and segment_count(body) <= texts.PROVIDER_SEGMENTS
    assert message["status_callback"] is None  # alerts tracks only its own texts
    with session_scope(tw.sqlalchemy_url) as session:
        notice = session.scalars(select(m.ProviderNotice)).one()
        assert (notice.channel, notice.status, notice.error) == ("sms", "sent", None)
        referral = session.get(m.Referral, referral_id)
        assert referral is not None and referral.status == "provider_notified"


def test_without_consent_the_callback_number_is_not_texted(
        settings: Settings, twilio: FakeTwilioServer) -> None:
    _, status = _hand_off(_twilio_settings(settings, twilio), ["service_type"])
    assert status == "sent"
    [message] = twilio.messages(to=PROVIDER)
    assert CALLBACK not in message["body"] and "Language" not in message["body"]


def test_an_opted_out_provider_number_fails_without_the_number_in_the_error(
        settings: Settings, twilio: FakeTwilioServer) -> None:
    twilio.fake.opt_out(PROVIDER)
    referral_id, status = _hand_off(_twilio_settings(settings, twilio), ["service_type"])
    assert status == "failed"
    with session_scope(settings.sqlalchemy_url) as session:
        notice = session.scalars(select(m.ProviderNotice)).one()
        assert notice.error == "sms failed: Twilio error 21610 (the number has opted out: STOP)"
        referral = session.get(m.Referral, referral_id)
        assert referral is not None and referral.status == "chosen"  # staff follow up
    assert twilio.messages(to=PROVIDER) == []


def test_the_dev_outbox_keeps_the_text_in_referrals_own_table(settings: Settings) -> None:
    assert settings.sms_backend == "outbox"
    _, status = _hand_off(settings, ["service_type", "region"])
    assert status == "sent"
    with session_scope(settings.sqlalchemy_url) as session:
        [row] = session.scalars(select(m.DevSmsMessage)).all()
        assert decrypt_phone(settings.secret_key, row.to_encrypted) == PROVIDER
        assert row.to_masked.endswith("42") and PROVIDER not in row.to_masked
        assert "Area: 98104 (Seattle, WA)" in row.body and row.segments <= 3
        assert session.scalar(select(func.count()).select_from(AlertsDevOutbox)) == 0
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            assert client.get("/dev/outbox.json").status_code == 401
            [shown] = client.get("/dev/outbox.json", headers=ADMIN).json()
            assert shown["body"] == row.body and shown["to"] == row.to_masked
    finally:
        app.dependency_overrides.clear()


def test_a_long_note_is_shortened_but_the_link_and_callback_stay_whole() -> None:
    notice = {"service_name": "Harbor Street Bupe Walk-in " * 4, "service_types": [
        "withdrawal_management", "buprenorphine"], "language": "es", "region": "Seattle",
        "age": 41, "payment": "sliding_fee", "note": "Necesita ayuda rápido. " * 30,
        "callback_phone": CALLBACK,
        "status_link": f"https://lookout.example.org/r/{uuid.uuid4()}?t={'a' * 32}"}
    body = texts.provider_notice_text(notice)
    assert is_gsm7(body) and segment_count(body) <= texts.PROVIDER_SEGMENTS
    assert body.endswith(f"Update: {notice['status_link']}")
    assert f"Call back: {CALLBACK}" in body and "Payment: sliding fee" in body
    assert "Needs: withdrawal management, buprenorphine" in body and "Note: Necesita" in body


def test_the_admin_api_takes_only_an_e164_number_for_sms(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url, webhook=None)
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app) as client:
            path = "/v1/providers/services/svc-harbor-bup"
            bad = client.patch(path, headers=ADMIN, json={"notify_channel": "sms",
                                                          "notify_address": "206-555-0142"})
            assert bad.status_code == 422
            assert bad.headers["content-type"] == "application/problem+json"
            assert bad.json()["errors"][0]["field"] == "/notify_address"
            good = client.patch(path, headers=ADMIN, json={"notify_channel": "sms",
                                                           "notify_address": PROVIDER})
            assert good.status_code == 200 and good.json()["notify_channel"] == "sms"
    finally:
        app.dependency_overrides.clear()


def test_the_worker_texts_the_provider_from_its_thread(settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's path: the reply handler runs in a thread of the agent's event loop and
    the SMS backend runs its own loop there."""
    load_directory(settings.sqlalchemy_url, webhook=None)
    with session_scope(settings.sqlalchemy_url) as session:
        harbor = session.get(m.Service, "svc-harbor-bup")
        assert harbor is not None
        harbor.notify_channel, harbor.notify_address = "sms", PROVIDER
    monkeypatch.setattr(agents, "settings", settings)
    monkeypatch.setattr(agents, "clock", lambda: TUESDAY_10AM)
    monkeypatch.setattr(agents, "notifier", ChannelNotifier(settings))
    contact = uuid.uuid4()

    async def conversation() -> None:
        await agents.handle_request(requested(contact))
        await agents.handle_reply(reply(contact, "1"))

    asyncio.run(conversation())
    agents.notices.join()
    with session_scope(settings.sqlalchemy_url) as session:
        [row] = session.scalars(select(m.DevSmsMessage)).all()
        assert row.body.startswith("Lookout referral: a person chose Harbor Street Bupe")
        assert "Area: 98104 (Seattle, WA)" in row.body  # the SMS consent: type, language, area
        notice = session.scalars(select(m.ProviderNotice)).one()
        assert (notice.channel, notice.status) == ("sms", "sent")
