"""Alert creation and fan-out against real databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from services.alerts.models import Alert, Delivery, Subscriber, Subscription
from services.alerts.service.common import segments_of
from services.alerts.service.fanout import fan_out, pending_deliveries
from services.alerts.service.signals import alert_from_signal
from shared.crypto import encrypt_phone, phone_lookup_hash
from shared.db import session_scope
from shared.settings import Settings
from testing.builders import contamination_signal


def add_subscriber(settings: Settings, phone: str, region_id: str,
                   status: str = "active", is_test: bool = False) -> Subscriber:
    with session_scope(settings.sqlalchemy_url) as session:
        sub = Subscriber(phone_encrypted=encrypt_phone(settings.secret_key, phone),
                         phone_hash=phone_lookup_hash(settings.secret_key, phone),
                         status=status, consent_at=datetime.now(UTC), consent_channel="test",
                         is_test=is_test)
        session.add(sub)
        session.flush()
        session.add(Subscription(subscriber_id=sub.id, region_id=region_id))
        return sub


def test_a_signal_makes_one_alert_even_when_redelivered(settings: Settings) -> None:
    signal = contamination_signal()
    with session_scope(settings.sqlalchemy_url) as session:
        first = alert_from_signal(session, settings, signal)
    with session_scope(settings.sqlalchemy_url) as session:
        again = alert_from_signal(session, settings, signal)
        assert again.id == first.id
        assert session.scalar(select(func.count()).select_from(Alert)) == 1
    assert "Fentanyl" in first.body_en and "98104" in first.body_en
    assert "STOP" in first.body_en
    assert segments_of(first.texts) == {"en": 1, "es": 2, "fr": 2}
    assert first.segments == 2  # the most of any language


def test_policy_auto_approves_critical_and_drafts_the_rest(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        critical = alert_from_signal(session, settings, contamination_signal())
        warning = alert_from_signal(session, settings, contamination_signal(
            region_id="us/wa/king-county/98105", severity="warning"))
        assert critical.status == "approved" and critical.approved_by == "policy:auto"
        assert warning.status == "draft" and warning.approved_at is None
        assert fan_out(session, warning) == 0


def test_fan_out_reaches_active_subscribers_of_the_region_and_its_parents(
    settings: Settings,
) -> None:
    here = add_subscriber(settings, "+12065550101", "us/wa/king-county/98104")
    county = add_subscriber(settings, "+12065550102", "us/wa/king-county")
    state = add_subscriber(settings, "+12065550103", "us/wa")
    add_subscriber(settings, "+12065550104", "us/wa/king-county/98105")  # a sibling ZIP
    add_subscriber(settings, "+12065550105", "us/or")
    add_subscriber(settings, "+12065550106", "us/wa/king-county/98104", status="stopped")
    add_subscriber(settings, "+12065550107", "us/wa/king-county/98104", status="pending")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, contamination_signal())
        assert fan_out(session, alert) == 3
        assert fan_out(session, alert) == 0  # again: nothing new
        got = set(session.scalars(select(Delivery.subscriber_id)))
        assert got == {here.id, county.id, state.id}
        assert alert.status == "sending"
        pages = list(pending_deliveries(session, alert.id))
        assert sum(len(p) for p in pages) == 3


def test_canary_signals_get_their_own_test_alert_for_test_subscribers_only(
    settings: Settings,
) -> None:
    tester = add_subscriber(settings, "+12065550191", "us/wa/king-county/98104", is_test=True)
    add_subscriber(settings, "+12065550192", "us/wa/king-county/98104")
    with session_scope(settings.sqlalchemy_url) as session:
        real = alert_from_signal(session, settings, contamination_signal())
        canaries = [
            alert_from_signal(
                session, settings,
                contamination_signal(severity="warning").model_copy(update={"canary": True}))
            for _ in range(2)
        ]
        assert len({real.id, *(c.id for c in canaries)}) == 3  # never merged
        for canary in canaries:
            assert canary.kind == "canary" and canary.status == "approved"
            assert canary.approved_by == "policy:canary"
            assert canary.body_en.startswith("[TEST]")
            assert fan_out(session, canary) == 1
            got = session.scalars(select(Delivery.subscriber_id)
                                  .where(Delivery.alert_id == canary.id)).all()
            assert got == [tester.id]
        assert fan_out(session, real) == 2  # a real alert reaches everyone
