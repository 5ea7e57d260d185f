"""The sender with the real twilio SDK against the fake Twilio server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from services.alerts import service
from services.alerts.models import Delivery, Subscriber
from services.alerts.sender import Sender
from services.alerts.sms import TwilioSmsBackend
from shared.db import session_scope, utcnow
from shared.events import SmsOutboundJobV1
from shared.fakes.twilio_server import FakeTwilioServer
from shared.settings import Settings
from tests.alerts.test_service import add_subscriber
from tests.builders import contamination_signal

SID = "AC" + "1" * 32
TOKEN = "test-auth-token"


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioServer]:
    with FakeTwilioServer(account_sid=SID, auth_token=TOKEN) as server:
        yield server


@pytest.fixture
def twilio_settings(settings: Settings, fake_twilio: FakeTwilioServer) -> Settings:
    return settings.model_copy(update={
        "sms_backend": "twilio", "twilio_account_sid": SID, "twilio_auth_token": TOKEN,
        "twilio_api_base_url": fake_twilio.url, "sms_rate_per_second": 0,
    })


def _jobs(settings: Settings) -> list[SmsOutboundJobV1]:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = service.alert_from_signal(session, settings, contamination_signal())
        service.fan_out(session, alert)
        return [SmsOutboundJobV1(producer="test", delivery_id=d.id, alert_id=alert.id,
                                 subscriber_id=d.subscriber_id, created_at=utcnow())
                for page in service.pending_deliveries(session, alert.id) for d in page]


def _send_all(settings: Settings, jobs: list[SmsOutboundJobV1]) -> None:
    async def go() -> None:
        backend = TwilioSmsBackend(settings)
        sender = Sender(settings, backend)
        for job in jobs:
            await sender.handle(job)
        await backend.close()

    asyncio.run(go())


def _delivery(settings: Settings, delivery_id: uuid.UUID) -> Delivery:
    with session_scope(settings.sqlalchemy_url) as session:
        d = session.get(Delivery, delivery_id)
        assert d is not None
        return d


def test_sends_once_even_when_the_job_is_redelivered(
    twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    add_subscriber(twilio_settings, "+12065550111", "us/wa/king-county/98104")
    jobs = _jobs(twilio_settings)
    _send_all(twilio_settings, jobs + jobs)
    sent = fake_twilio.messages()
    assert len(sent) == 1
    assert sent[0]["to"] == "+12065550111"
    assert "Fentanyl" in sent[0]["body"]
    d = _delivery(twilio_settings, jobs[0].delivery_id)
    assert d.status == "queued" and d.provider_sid == sent[0]["sid"] and d.handed_at


def test_stop_before_send_means_no_text(
    twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    sub = add_subscriber(twilio_settings, "+12065550112", "us/wa/king-county/98104")
    jobs = _jobs(twilio_settings)
    with session_scope(twilio_settings.sqlalchemy_url) as session:
        row = session.get(Subscriber, sub.id)
        assert row is not None
        row.status = "stopped"
    _send_all(twilio_settings, jobs)
    assert fake_twilio.messages() == []
    assert _delivery(twilio_settings, jobs[0].delivery_id).status == "skipped"


def test_twilio_unsubscribed_error_stops_the_subscriber(
    twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    sub = add_subscriber(twilio_settings, "+12065550113", "us/wa/king-county/98104")
    fake_twilio.opt_out("+12065550113")
    jobs = _jobs(twilio_settings)
    _send_all(twilio_settings, jobs)
    d = _delivery(twilio_settings, jobs[0].delivery_id)
    assert d.status == "failed" and d.error_code == "21610"
    with session_scope(twilio_settings.sqlalchemy_url) as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == sub.id)) == \
            "stopped"


def test_invalid_number_marks_the_subscriber_invalid(
    twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    sub = add_subscriber(twilio_settings, "+15005550001", "us/wa/king-county/98104")
    jobs = _jobs(twilio_settings)
    _send_all(twilio_settings, jobs)
    assert _delivery(twilio_settings, jobs[0].delivery_id).error_code == "21211"
    with session_scope(twilio_settings.sqlalchemy_url) as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.id == sub.id)) == \
            "invalid"


def test_rate_limit_errors_are_retried(
    twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    add_subscriber(twilio_settings, "+12065550114", "us/wa/king-county/98104")
    fake_twilio.add_fault(429, count=2)
    jobs = _jobs(twilio_settings)
    _send_all(twilio_settings, jobs)
    assert len(fake_twilio.messages()) == 1
    d = _delivery(twilio_settings, jobs[0].delivery_id)
    assert d.status == "queued"
