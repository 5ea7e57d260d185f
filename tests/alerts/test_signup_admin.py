"""Web signup with a code by SMS (real twilio SDK against the fake server), and the admin's
export and erasure of one subscriber's data."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.alerts.api import app
from services.alerts.models import Delivery, Subscriber, Subscription
from services.alerts.service.fanout import fan_out
from services.alerts.service.signals import alert_from_signal
from shared.crypto import phone_lookup_hash
from shared.db import session_scope
from shared.settings import Settings, get_settings
from testing.builders import contamination_signal
from testing.twilio_server import FakeTwilioServer
from tests.alerts.test_service import add_subscriber
from tests.credentials import official_headers

PHONE = "+12065550177"


@pytest.fixture
def client(twilio_settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: twilio_settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def _subscriber(settings: Settings, phone: str = PHONE) -> Subscriber | None:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalar(select(Subscriber).where(
            Subscriber.phone_hash == phone_lookup_hash(settings.secret_key, phone)))


def _csrf(page: str) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return token.group(1)


def _start(client: TestClient, **form: str) -> tuple[int, str]:
    """The form as a browser sends it: the page first (its CSRF cookie and field)."""
    data = {"phone": "(206) 555-0177", "area": "98104", "language": "en", "consent": "yes",
            "csrf_token": _csrf(client.get("/signup").text), **form}
    response = client.post("/signup", data={k: v for k, v in data.items() if v})
    return response.status_code, response.text


def _confirm(client: TestClient, page: str, code: str) -> tuple[int, str]:
    signup_id = re.search(r'name="signup_id" value="([^"]+)"', page)
    assert signup_id is not None
    response = client.post("/signup/confirm", data={
        "signup_id": signup_id.group(1), "code": code, "csrf_token": _csrf(page)})
    return response.status_code, response.text


def test_signup_page_shows_the_consent_wording(client: TestClient) -> None:
    page = client.get("/signup?language=es").text
    assert 'name="consent"' in page and "Acepto recibir alertas" in page
    assert 'type="checkbox"' in page and 'name="phone"' in page and 'name="area"' in page


def test_signup_double_opt_in(client: TestClient, twilio_settings: Settings,
                              fake_twilio: FakeTwilioServer) -> None:
    status, page = _start(client)
    assert status == 200 and 'name="code"' in page
    assert _subscriber(twilio_settings) is None  # nothing is subscribed before the code
    sent = fake_twilio.messages()
    assert len(sent) == 1 and sent[0]["to"] == PHONE
    code = re.search(r"\b(\d{6})\b", sent[0]["body"])
    assert code is not None
    done_status, done = _confirm(client, page, code.group(1))
    assert done_status == 200 and 'id="done"' in done
    sub = _subscriber(twilio_settings)
    assert sub is not None and sub.status == "active" and sub.consent_channel == "web"
    assert sub.consent_text and "Message and data rates may apply" in sub.consent_text
    assert PHONE not in done and "555-0177" not in done


def test_signup_refuses_without_consent_or_with_a_bad_number(
    client: TestClient, twilio_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    assert _start(client, consent="")[0] == 422
    assert _start(client, phone="12345")[0] == 422
    assert _start(client, area="00000")[0] == 422
    assert fake_twilio.messages() == [] and _subscriber(twilio_settings) is None


def test_wrong_codes_are_limited(client: TestClient, twilio_settings: Settings,
                                 fake_twilio: FakeTwilioServer) -> None:
    _status, page = _start(client)
    code = re.search(r"\b(\d{6})\b", fake_twilio.messages()[0]["body"])
    assert code is not None
    wrong = "000000" if code.group(1) != "000000" else "111111"
    statuses = [_confirm(client, page, wrong)[0]
                for _ in range(twilio_settings.signup_code_max_attempts)]
    assert statuses == [422] * twilio_settings.signup_code_max_attempts
    # The right code no longer works once the attempts are used up.
    assert _confirm(client, page, code.group(1))[0] == 429
    assert _subscriber(twilio_settings) is None
    # And a new code is not sent again within a minute.
    assert _start(client)[0] == 429


def test_admin_export_and_erase(client: TestClient, twilio_settings: Settings) -> None:
    sub = add_subscriber(twilio_settings, PHONE, "us/wa/king-county/98104")
    with session_scope(twilio_settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, twilio_settings, contamination_signal())
        fan_out(session, alert)
    operator = {"Authorization": f"Bearer {twilio_settings.admin_token}"}
    admin = official_headers(twilio_settings, "ada.admin", role="admin")
    assert client.get("/v1/admin/subscribers/export", params={"phone": PHONE}).status_code \
        == 401
    # Decrypting a subscriber's data takes a named official admin: not the shared token,
    # not a reviewer.
    for headers in (operator, official_headers(twilio_settings, "rev", role="reviewer")):
        assert client.get("/v1/admin/subscribers/export", params={"phone": PHONE},
                          headers=headers).status_code in (401, 403)
    exported = client.get("/v1/admin/subscribers/export", params={"phone": "2065550177"},
                          headers=admin)
    assert exported.status_code == 200
    data = exported.json()
    assert data["phone"] == PHONE and data["areas"] == ["us/wa/king-county/98104"]
    assert len(data["messages"]) == 1

    assert client.delete("/v1/admin/subscribers", params={"phone": PHONE},
                         headers=operator).status_code == 204
    assert client.get("/v1/admin/subscribers/export", params={"phone": PHONE},
                      headers=admin).status_code == 404
    with session_scope(twilio_settings.sqlalchemy_url) as session:
        row = session.get(Subscriber, sub.id)
        assert row is not None and row.status == "erased"
        assert row.phone_hash != phone_lookup_hash(twilio_settings.secret_key, PHONE)
        assert row.phone_encrypted.startswith("erased:")
        assert session.scalar(select(Subscription).where(
            Subscription.subscriber_id == sub.id)) is None
        assert session.scalar(select(Delivery.status)) == "skipped"
