"""The inbound SMS webhook: signed Twilio form posts, keywords, TwiML replies, and the events
it publishes through the alerts outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from services.alerts.models import OutboxMessage, Subscriber, Subscription
from shared.crypto import phone_lookup_hash
from shared.db import session_scope
from shared.events import OverdoseReportV1, ReferralRequestedV1, SmsReceivedV1
from shared.settings import Settings
from tests.alerts.conftest import PUBLIC

PHONE = "+12065550142"


def text(client: TestClient, settings: Settings, body: str, phone: str = PHONE,
         sid: str | None = None) -> str:
    """Send one SMS to the webhook, signed like Twilio; return the TwiML reply's text."""
    params = {"From": phone, "To": "+15005550006", "Body": body,
              "MessageSid": sid or "SM" + uuid.uuid4().hex,
              "AccountSid": settings.twilio_account_sid, "NumMedia": "0"}
    signature = RequestValidator(settings.twilio_auth_token).compute_signature(
        f"{PUBLIC}/v1/sms/inbound", params)
    response = client.post("/v1/sms/inbound", data=params,
                           headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)  # noqa: S314 - our own reply, in a test
    assert root.tag == "Response"
    return " ".join(m.text or "" for m in root.iter("Message"))


def contact(settings: Settings, phone: str = PHONE) -> Subscriber | None:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalar(select(Subscriber).where(
            Subscriber.phone_hash == phone_lookup_hash(settings.secret_key, phone)))


def outbox(settings: Settings) -> list[tuple[str, str, dict[str, object]]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return [(r.topic, r.key, json.loads(r.payload))
                for r in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_join_then_yes_subscribes_with_a_consent_record(client: TestClient,
                                                        public_settings: Settings) -> None:
    reply = text(client, public_settings, "join 98104")
    for words in ("YES", "STOP", "HELP", "rates may apply", "98104"):
        assert words in reply
    sub = contact(public_settings)
    assert sub is not None and sub.status == "pending" and sub.consent_at is None
    reply = text(client, public_settings, "Yes!")
    assert "98104" in reply and "STOP" in reply
    sub = contact(public_settings)
    assert sub is not None and sub.status == "active"
    assert sub.consent_channel == "sms" and sub.consent_at is not None
    assert sub.consent_text and "YES" in sub.consent_text
    with session_scope(public_settings.sqlalchemy_url) as session:
        assert list(session.scalars(select(Subscription.region_id))) == \
            ["us/wa/king-county/98104"]


def test_join_again_confirms_and_unknown_areas_are_refused(
    client: TestClient, public_settings: Settings
) -> None:
    assert "don't know" in text(client, public_settings, "JOIN Atlantis")
    assert contact(public_settings) is None
    text(client, public_settings, "JOIN 98104")
    text(client, public_settings, "JOIN 98105")
    sub = contact(public_settings)
    assert sub is not None and sub.status == "active" and sub.consent_channel == "sms"


@pytest.mark.parametrize("word", ["STOP", "stop", "Stop.", "STOPALL", "UNSUBSCRIBE", "cancel",
                                  "END", "quit", "ALTO", "parar", "CANCELAR", "ARRET",
                                  "Arrêt"])
def test_stop_family_stops_at_once_with_one_confirmation(
    client: TestClient, public_settings: Settings, word: str
) -> None:
    text(client, public_settings, "JOIN 98104")
    text(client, public_settings, "YES")
    first = text(client, public_settings, word)
    assert "START" in first
    sub = contact(public_settings)
    assert sub is not None and sub.status == "stopped" and sub.stopped_at is not None
    assert text(client, public_settings, word) == ""  # one confirmation only
    assert text(client, public_settings, "what's up") == ""  # never texted again
    resumed = text(client, public_settings, "UNSTOP" if word.islower() else "START")
    assert "STOP" in resumed
    sub = contact(public_settings)
    assert sub is not None and sub.status == "active"


def test_spanish_stop_from_a_stranger_is_recorded_and_answered_in_spanish(
    client: TestClient, public_settings: Settings
) -> None:
    reply = text(client, public_settings, "alto")
    assert "baja" in reply
    sub = contact(public_settings)
    assert sub is not None and sub.status == "stopped" and sub.language == "es"


def test_areas_add_remove_and_language(client: TestClient, public_settings: Settings) -> None:
    assert "no alert areas" in text(client, public_settings, "AREAS")
    text(client, public_settings, "JOIN 98104")
    text(client, public_settings, "YES")
    assert "98105" in text(client, public_settings, "ADD 98105")
    assert "98104" in text(client, public_settings, "AREAS")
    reply = text(client, public_settings, "REMOVE 98104")
    assert "98104" not in reply and "98105" in reply
    assert "espanol" in text(client, public_settings, "LANG ES")
    assert "zonas" in text(client, public_settings, "AREAS")


def test_help_and_anything_else_get_the_help_text(client: TestClient,
                                                  public_settings: Settings) -> None:
    for body in ("HELP", "INFO", "hello?"):
        reply = text(client, public_settings, body)
        assert "JOIN" in reply and "STOP" in reply
    assert contact(public_settings) is None  # nothing stored for a stranger's question


def test_od_report_is_published_anonymously(client: TestClient,
                                            public_settings: Settings) -> None:
    reply = text(client, public_settings,
                 "OD 98104 two down behind the store, call me 206-555-0142 or x@y.org")
    assert "anonymous" in reply
    rows = outbox(public_settings)
    assert len(rows) == 1
    topic, key, payload = rows[0]
    assert topic == "overdose.reports.v1" and key == "us/wa/king-county/98104"
    report = OverdoseReportV1.model_validate(payload)
    assert report.source == "public_sms" and report.region_id == key
    assert report.note and "two down" in report.note
    dumped = json.dumps(payload)
    for leaked in ("206-555-0142", "2065550142", "555-0142", "x@y.org", "+1206"):
        assert leaked not in dumped
    assert contact(public_settings) is None  # a report does not make a contact


def test_od_without_an_area_asks_for_it(client: TestClient, public_settings: Settings) -> None:
    assert "postal code" in text(client, public_settings, "OD bad batch")
    assert outbox(public_settings) == []


def test_treatment_requests_a_referral_and_replies_are_forwarded(
    client: TestClient, public_settings: Settings
) -> None:
    reply = text(client, public_settings, "HELP ME")
    assert "options" in reply
    sub = contact(public_settings)
    assert sub is not None and sub.status == "contact"
    topic, key, payload = outbox(public_settings)[0]
    request = ReferralRequestedV1.model_validate(payload)
    assert topic == "referrals.requests.v1" and key == str(sub.id)
    assert request.contact_ref == sub.id and request.channel == "sms"
    assert PHONE not in json.dumps(payload) and "2065550142" not in json.dumps(payload)

    assert text(client, public_settings, "2") == ""  # a choice in the conversation
    assert text(client, public_settings, "yes") == ""
    forwarded = [SmsReceivedV1.model_validate(p) for t, _k, p in outbox(public_settings)
                 if t == "sms.inbound.v1"]
    assert [f.body for f in forwarded] == ["2", "yes"]
    assert all(f.contact_ref == sub.id for f in forwarded)

    text(client, public_settings, "STOP")
    assert text(client, public_settings, "3") == ""
    assert len([t for t, _k, _p in outbox(public_settings) if t == "sms.inbound.v1"]) == 2


def test_ayuda_answers_in_spanish(client: TestClient, public_settings: Settings) -> None:
    assert "ayuda" in text(client, public_settings, "AYUDA")
    (_t, _k, payload), = outbox(public_settings)
    assert payload["language"] == "es"


def test_replies_are_escaped_twiml(client: TestClient, public_settings: Settings) -> None:
    params = {"From": PHONE, "Body": "JOIN 98104"}
    signature = RequestValidator(public_settings.twilio_auth_token).compute_signature(
        f"{PUBLIC}/v1/sms/inbound", params)
    raw = client.post("/v1/sms/inbound", data=params,
                      headers={"X-Twilio-Signature": signature}).text
    assert "Msg&amp;data" in raw and "Msg&data" not in raw


@pytest.mark.parametrize("signature", [None, "", "Zm9yZ2Vk", "other-params"])
def test_unsigned_or_forged_inbound_is_refused(
    client: TestClient, public_settings: Settings, signature: str | None
) -> None:
    params = {"From": PHONE, "Body": "STOP"}
    headers = {}
    if signature == "other-params":
        headers["X-Twilio-Signature"] = RequestValidator(
            public_settings.twilio_auth_token).compute_signature(
            f"{PUBLIC}/v1/sms/inbound", {**params, "Body": "JOIN 98104"})
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    response = client.post("/v1/sms/inbound", data=params, headers=headers)
    assert response.status_code == 403
    assert contact(public_settings) is None


def test_signature_with_the_wrong_token_is_refused(client: TestClient,
                                                   public_settings: Settings) -> None:
    params = {"From": PHONE, "Body": "JOIN 98104"}
    signature = RequestValidator("not-the-token").compute_signature(
        f"{PUBLIC}/v1/sms/inbound", params)
    assert client.post("/v1/sms/inbound", data=params,
                       headers={"X-Twilio-Signature": signature}).status_code == 403


def test_a_replayed_message_sid_makes_one_report(client: TestClient,
                                                  public_settings: Settings) -> None:
    sid = "SM" + "7" * 32
    replies = [text(client, public_settings, "OD 98104 bad batch at the park", sid=sid)
               for _ in range(25)]
    assert "thank you" in replies[0] and replies[1:] == [""] * 24
    assert [topic for topic, _k, _e in outbox(public_settings)] == ["overdose.reports.v1"]
    # Another message (another SID) with the same words is another report.
    text(client, public_settings, "OD 98104 bad batch at the park")
    assert len(outbox(public_settings)) == 2


def test_signatures_are_checked_against_the_public_url_not_the_host_header(
    client: TestClient, public_settings: Settings
) -> None:
    params = {"From": PHONE, "To": "+15005550006", "Body": "OD 98104",
              "MessageSid": "SM" + uuid.uuid4().hex}
    validator = RequestValidator(public_settings.twilio_auth_token)
    for host in ("evil.example", "testserver"):  # signed for the URL the Host header makes
        forged = validator.compute_signature(f"http://{host}/v1/sms/inbound", params)
        assert client.post("/v1/sms/inbound", data=params, headers={
            "Host": host, "X-Twilio-Signature": forged}).status_code == 403
    assert outbox(public_settings) == []
