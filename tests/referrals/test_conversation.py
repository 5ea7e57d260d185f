"""The SMS conversation through the service layer, with time simulated: request -> options
-> choice -> provider notice (only consented fields) -> details -> follow-up -> outcome."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from services.alerts import inbound
from services.alerts.models import OutboxMessage as AlertsOutbox
from services.referrals import models as m
from services.referrals import service, texts
from services.referrals.matching import TREATMENT
from services.referrals.notify import FakeNotifier
from shared.db import get_sessionmaker, session_scope, try_job_lock
from shared.gsm import segment_count
from shared.settings import Settings
from shared.topics import CONTACT_STOPS, REFERRAL_REQUESTS, SMS_INBOUND, Topic
from tests.referrals.helpers import (
    TUESDAY_10AM,
    load_directory,
    outbox,
    reply,
    requested,
    sms_bodies,
    statuses,
)


def _request(settings: Settings, contact: uuid.UUID, **kw: object) -> uuid.UUID:
    with session_scope(settings.sqlalchemy_url) as session:
        referral = service.handle_request(session, settings, requested(contact, **kw),  # type: ignore[arg-type]
                                          TUESDAY_10AM)
        assert referral is not None
        return referral.id


def _reply(settings: Settings, contact: uuid.UUID, body: str, notifier: FakeNotifier,
           minutes: float = 1) -> str | None:
    now = TUESDAY_10AM + timedelta(minutes=minutes)
    with session_scope(settings.sqlalchemy_url) as session:
        handoff = service.handle_reply(session, settings, reply(contact, body, now), now)
    if handoff is None:
        return None
    with session_scope(settings.sqlalchemy_url) as session:
        return service.hand_off(session, settings, notifier, handoff, now)


def _tick(settings: Settings, after: timedelta) -> dict[str, int]:
    with session_scope(settings.sqlalchemy_url) as session:
        return service.tick(session, settings, TUESDAY_10AM + after)


def test_a_whole_conversation_with_consent_respected(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    referral_id = _request(settings, contact, text="TREATMENT please, I use fentanyl daily")

    [options] = sms_bodies(settings.sqlalchemy_url)
    assert segment_count(options) <= 2
    assert "1 Harbor Street Bupe Walk-in" in options
    assert "2 Eastside Methadone" in options
    assert "3 North Outpatient" in options
    assert "Reply 1, 2, 3" in options and "STOP" in options

    assert _reply(settings, contact, "1", notifier) == "sent"
    [(channel, address, notice)] = notifier.sent
    assert (channel, address) == ("webhook", "http://127.0.0.1:9/hook")
    # Only what the SMS consent covers: kind of help, language, area (and the referral).
    assert set(notice) == {"referral_id", "service_id", "service_name", "status_link",
                           "consent", "service_types", "language", "region"}
    assert notice["region"] == "98104 (Seattle, WA)"
    assert notice["consent"]["shared_fields"] == ["service_type", "language", "region"]
    flat = json.dumps(notice)
    assert str(contact) not in flat and "fentanyl" not in flat
    assert notice["status_link"].startswith(f"http://127.0.0.1:8002/r/{referral_id}?t=")

    details = sms_bodies(settings.sqlalchemy_url)[-1]
    assert "Harbor Street Bupe Walk-in" in details
    assert "100 Example Ave, Seattle" in details
    assert "206-555-0101" in details and "open now until 20:00" in details
    assert segment_count(details) <= 2

    # A second "1" before the follow-up is not taken as "yes, connected".
    _reply(settings, contact, "1", notifier, minutes=2)
    assert statuses(settings.sqlalchemy_url)[-1] == "provider_notified"

    delay = timedelta(seconds=settings.referrals_followup_delay_seconds)
    assert _tick(settings, delay - timedelta(seconds=1))["followups"] == 0
    assert _tick(settings, delay + timedelta(minutes=1))["followups"] == 1
    assert _tick(settings, delay + timedelta(minutes=2))["followups"] == 0  # only once
    assert sms_bodies(settings.sqlalchemy_url)[-1].startswith(
        "Lookout: did you connect? Reply 1 yes, 2 no, 3 other options.")

    _reply(settings, contact, "1", notifier, minutes=delay.total_seconds() / 60 + 5)
    assert statuses(settings.sqlalchemy_url) == [
        "requested", "options_sent", "chosen", "provider_notified", "connected"]
    events = outbox(settings.sqlalchemy_url, "referrals.events.v1")
    assert {e["referral_id"] for e in events} == {str(referral_id)}
    assert all("contact_ref" not in e for e in events)
    assert events[3]["provider_service_id"] == "svc-harbor-bup"
    assert "glad you connected" in sms_bodies(settings.sqlalchemy_url)[-1]
    assert {e["contact_ref"] for e in outbox(settings.sqlalchemy_url, "sms.requests.v1")} == {
        str(contact)}


def test_redelivered_events_change_nothing(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    event = requested(contact)
    for _ in range(2):
        with session_scope(settings.sqlalchemy_url) as session:
            service.handle_request(session, settings, event, TUESDAY_10AM)
    choice = reply(contact, "2")
    handoffs = []
    for _ in range(2):
        with session_scope(settings.sqlalchemy_url) as session:
            handoffs.append(service.handle_reply(session, settings, choice, TUESDAY_10AM))
    assert handoffs[0] is not None and handoffs[0].service_id == "svc-eastside-otp"
    assert handoffs[1] is None
    assert len(sms_bodies(settings.sqlalchemy_url)) == 1
    assert statuses(settings.sqlalchemy_url) == ["requested", "options_sent", "chosen"]


def test_other_options_offers_new_places_and_a_new_choice(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    _request(settings, contact)
    _reply(settings, contact, "3", notifier)
    _tick(settings, timedelta(seconds=settings.referrals_followup_delay_seconds + 60))
    _reply(settings, contact, "3", notifier, minutes=300)  # "3 other options"
    again = sms_bodies(settings.sqlalchemy_url)[-1]
    assert "1 South Sound Bupe" in again and "Harbor" not in again
    assert "Reply 1." in again
    _reply(settings, contact, "1", notifier, minutes=301)
    assert statuses(settings.sqlalchemy_url)[-3:] == ["options_sent", "chosen",
                                                      "provider_notified"]
    with session_scope(settings.sqlalchemy_url) as session:
        referral = session.scalars(select(m.Referral)).one()
        assert referral.chosen_service_id == "svc-south-bup"


def test_followup_no_means_declined(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    _request(settings, contact)
    _reply(settings, contact, "2", notifier)
    _tick(settings, timedelta(seconds=settings.referrals_followup_delay_seconds + 60))
    _reply(settings, contact, "2", notifier, minutes=300)
    assert statuses(settings.sqlalchemy_url)[-1] == "declined"
    assert "988" in sms_bodies(settings.sqlalchemy_url)[-1]


def test_silence_becomes_no_response(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    _request(settings, uuid.uuid4())
    assert _tick(settings, timedelta(hours=1))["no_response"] == 0
    assert _tick(settings, timedelta(hours=25))["no_response"] == 1
    assert statuses(settings.sqlalchemy_url)[-1] == "no_response"


def _text_alerts(settings: Settings, phone: str, body: str) -> None:
    """An SMS the way production takes it: alerts' inbound handling, which writes the events
    for referrals to its outbox."""
    with session_scope(settings.sqlalchemy_url) as session:
        inbound.handle_inbound(session, settings, phone, body)


def _alerts_events(settings: Settings, topic: Topic) -> list[Any]:
    assert topic.model is not None
    with session_scope(settings.sqlalchemy_url) as session:
        return [topic.model.model_validate_json(row.payload) for row in session.scalars(
            select(AlertsOutbox).where(AlertsOutbox.topic == topic.name)
            .order_by(AlertsOutbox.id))]


def _stop_through_alerts(settings: Settings, phone: str, body: str) -> uuid.UUID:
    """TREATMENT texted to alerts opens a referral, then the STOP word `body` goes the way
    production takes it: alerts announces it (`contacts.stops.v1`), referrals handles it
    (twice: a redelivery changes nothing). Returns the contact_ref."""
    _text_alerts(settings, phone, "TRAITEMENT" if body == "Arrêt" else "TREATMENT")
    [request] = _alerts_events(settings, REFERRAL_REQUESTS)[-1:]
    with session_scope(settings.sqlalchemy_url) as session:
        assert service.handle_request(session, settings, request, TUESDAY_10AM) is not None
    _text_alerts(settings, phone, body)
    # Alerts does not forward a STOP as a conversation reply: it tells referrals.
    assert _alerts_events(settings, SMS_INBOUND) == []
    [stopped] = [e for e in _alerts_events(settings, CONTACT_STOPS)
                 if e.contact_ref == request.contact_ref]
    for ended in (1, 0):
        with session_scope(settings.sqlalchemy_url) as session:
            assert service.handle_stop(session, stopped, TUESDAY_10AM + timedelta(minutes=1)) \
                == ended
    return request.contact_ref


def test_stop_ends_the_conversation(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    notifier = FakeNotifier()
    sent_before = len(sms_bodies(settings.sqlalchemy_url))
    contact = _stop_through_alerts(settings, "+12065550190", "stop")
    sent_after_request = len(sms_bodies(settings.sqlalchemy_url))
    assert sent_after_request > sent_before  # the referral had texted (asked where)
    assert _reply(settings, contact, "1", notifier, minutes=2) is None
    assert notifier.sent == []
    assert len(sms_bodies(settings.sqlalchemy_url)) == sent_after_request  # nothing after
    assert statuses(settings.sqlalchemy_url) == ["requested", "stopped"]
    events = outbox(settings.sqlalchemy_url, "referrals.events.v1")
    assert events[-1]["actor"] == "person"


def test_unknown_place_asks_for_a_zip_then_offers(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    _request(settings, contact, region_id=None)
    assert "reply with your ZIP code" in sms_bodies(settings.sqlalchemy_url)[-1]
    _reply(settings, contact, "nowhere", notifier)
    assert "reply with your ZIP code" in sms_bodies(settings.sqlalchemy_url)[-1]
    _reply(settings, contact, "98104", notifier, minutes=2)
    assert "1 Harbor Street Bupe Walk-in" in sms_bodies(settings.sqlalchemy_url)[-1]
    _reply(settings, contact, "9", notifier, minutes=3)
    assert "please reply 1, 2, 3" in sms_bodies(settings.sqlalchemy_url)[-1]


def test_zip_in_the_text_and_a_named_service(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    _request(settings, uuid.uuid4(), region_id=None, text="TREATMENT methadone 98122")
    body = sms_bodies(settings.sqlalchemy_url)[-1]
    assert "1 Eastside Methadone" in body and "Harbor" not in body


def test_nothing_open_says_so_with_crisis_numbers(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    late = TUESDAY_10AM.replace(hour=22)
    with session_scope(settings.sqlalchemy_url) as session:
        service.handle_request(session, settings, requested(uuid.uuid4(), "TREATMENT methadone",
                                                            when=late), late)
    assert "no place open near you" in sms_bodies(settings.sqlalchemy_url)[-1]
    assert "988" in sms_bodies(settings.sqlalchemy_url)[-1]


def test_a_failed_notice_is_recorded_and_the_person_still_gets_details(
        settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    notifier.fail = True
    _request(settings, contact)
    assert _reply(settings, contact, "1", notifier) == "failed"
    assert statuses(settings.sqlalchemy_url)[-1] == "chosen"
    assert "100 Example Ave" in sms_bodies(settings.sqlalchemy_url)[-1]
    with session_scope(settings.sqlalchemy_url) as session:
        notice = session.scalars(select(m.ProviderNotice)).one()
        assert (notice.status, notice.error) == ("failed", "fake failure")


def test_purge_removes_personal_data_and_keeps_counts(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    _request(settings, contact, text="TREATMENT my words")
    _reply(settings, contact, "1", FakeNotifier())
    retention = timedelta(days=settings.referrals_retention_days)
    with session_scope(settings.sqlalchemy_url) as session:
        assert service.purge(session, settings, TUESDAY_10AM + retention - timedelta(hours=1)) == 0
    with session_scope(settings.sqlalchemy_url) as session:
        assert service.purge(session, settings, TUESDAY_10AM + retention) == 1
    with session_scope(settings.sqlalchemy_url) as session:
        referral = session.scalars(select(m.Referral)).one()
        assert referral.contact_ref is None and referral.text is None
        assert referral.purged_at is not None and referral.status == "no_response"
        assert all(n.payload is None for n in session.scalars(select(m.ProviderNotice)))
        assert session.scalars(select(m.StatusChange)).all()
        assert service.stats(session)["total"] == 1
        assert service.purge(session, settings, TUESDAY_10AM + 2 * retention) == 0


def test_spanish_requests_get_spanish_texts_and_spanish_speaking_places(
        settings: Settings) -> None:
    from prometheus_client import REGISTRY

    def changes(status: str) -> float:
        return REGISTRY.get_sample_value("lookout_referrals_status_changes_total",
                                         {"status": status, "source": "sms"}) or 0.0

    before = changes("options_sent")
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    event = requested(contact).model_copy(update={"language": "es"})
    with session_scope(settings.sqlalchemy_url) as session:
        service.handle_request(session, settings, event, TUESDAY_10AM)
    body = sms_bodies(settings.sqlalchemy_url)[-1]
    assert body.startswith("Lookout: lugares que pueden ayudarte")
    assert "1 Harbor Street Bupe Walk-in" in body  # speaks Spanish
    assert "2 Eastside Methadone" in body  # offers interpreters
    assert "North Outpatient" not in body  # English only
    assert "STOP para terminar." in body and segment_count(body) <= 2
    assert changes("options_sent") == before + 1
    _reply(settings, contact, "1", FakeNotifier())
    details = sms_bodies(settings.sqlalchemy_url)[-1]
    assert "Direccion: 100 Example Ave" in details and "abierto hasta las 20:00" in details


def test_meth_is_not_methadone_and_a_state_is_too_coarse(settings: Settings) -> None:
    assert service.parse_service_types("TREATMENT for meth") == list(TREATMENT)
    assert service.parse_service_types("need suboxone or detox") == [
        "buprenorphine", "withdrawal_management"]
    load_directory(settings.sqlalchemy_url)
    _request(settings, uuid.uuid4(), region_id="us/wa")
    assert "reply with your ZIP code" in sms_bodies(settings.sqlalchemy_url)[-1]


def test_a_french_conversation_in_french_with_oui_and_arret(settings: Settings) -> None:
    load_directory(settings.sqlalchemy_url)
    contact = uuid.uuid4()
    notifier = FakeNotifier()
    event = requested(contact, text="TRAITEMENT").model_copy(update={"language": "fr"})
    with session_scope(settings.sqlalchemy_url) as session:
        service.handle_request(session, settings, event, TUESDAY_10AM)
    options = sms_bodies(settings.sqlalchemy_url)[-1]
    assert options.startswith("Lookout: des lieux qui peuvent vous aider, pres de vous:")
    assert "1 Eastside Methadone" in options  # offers interpreters
    assert "Harbor" not in options and "North Outpatient" not in options  # en/es only
    assert options.endswith("STOP pour arreter.") and segment_count(options) <= 2

    assert _reply(settings, contact, "1", notifier) == "manual"  # no channel: staff read it
    with session_scope(settings.sqlalchemy_url) as session:
        notice = session.scalars(select(m.ProviderNotice)).one()
        assert notice.payload is not None and notice.payload["language"] == "fr"
    assert sms_bodies(settings.sqlalchemy_url)[-1].startswith(
        "Lookout: Eastside Methadone sait que vous venez.")
    _tick(settings, timedelta(seconds=settings.referrals_followup_delay_seconds + 60))
    assert sms_bodies(settings.sqlalchemy_url)[-1].startswith(
        "Lookout: avez-vous pu les joindre?")
    _reply(settings, contact, "Oui!", notifier, minutes=300)
    assert statuses(settings.sqlalchemy_url)[-1] == "connected"
    assert sms_bodies(settings.sqlalchemy_url)[-1].startswith("Lookout: tant mieux")

    # An accented STOP word ends a French conversation too.
    _stop_through_alerts(settings, "+12065550191", "Arrêt")
    assert statuses(settings.sqlalchemy_url)[-1] == "stopped"


def test_two_workers_ticking_at_once_send_each_follow_up_once(pg_url: str, tmp_path: Any) -> None:
    """Every referrals worker runs the timer; the round's job lock lets one of them do it."""
    settings = Settings(env="test", database_url=pg_url, var_dir=tmp_path / "var")
    load_directory(pg_url)
    for _ in range(3):
        contact = uuid.uuid4()
        _request(settings, contact)
        _reply(settings, contact, "2", FakeNotifier())
    later = TUESDAY_10AM + timedelta(seconds=settings.referrals_followup_delay_seconds + 60)
    worker_a, worker_b = get_sessionmaker(pg_url)(), get_sessionmaker(pg_url)()
    try:
        assert try_job_lock(worker_a, "referrals.tick")
        assert service.tick(worker_a, settings, later)["followups"] == 3
        assert not try_job_lock(worker_b, "referrals.tick")  # A's round is not over: skip
        worker_b.rollback()
        worker_a.commit()
        assert try_job_lock(worker_b, "referrals.tick")  # B's next round finds them done
        assert service.tick(worker_b, settings, later)["followups"] == 0
        worker_b.commit()
    finally:
        worker_a.close()
        worker_b.close()
    followup = texts.followup_text("en")
    assert sum(body == followup for body in sms_bodies(pg_url)) == 3
