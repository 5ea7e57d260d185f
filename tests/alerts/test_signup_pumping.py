"""The signup page against SMS pumping and against strangers: only served mobile numbers get
a code, caps per client and in all per hour (a metric and a log line when one trips), a CSRF
token on the form, STOP is never overridden, nothing changes before the code is confirmed,
the page answers the same for a known and an unknown number, and parallel wrong codes are
evaluated at most the limit. Real twilio SDK against the fake Twilio server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.alerts import inbound
from services.alerts.api import app
from services.alerts.models import SignupRequest, Subscriber
from shared.crypto import phone_lookup_hash
from shared.db import session_scope
from shared.ratelimit import client_key
from shared.settings import Settings, get_settings
from testing.twilio_server import FakeTwilioServer
from tests.alerts.test_service import add_subscriber
from tests.alerts.test_signup_admin import _confirm, _csrf, _start

SEATTLE = "us/wa/king-county/98104"


@pytest.fixture
def use_settings(twilio_settings: Settings) -> Iterator[Settings]:
    app.dependency_overrides[get_settings] = lambda: twilio_settings
    yield twilio_settings
    app.dependency_overrides.clear()


def _client(address: str = "203.0.113.7") -> TestClient:
    return TestClient(app, client=(address, 50000))


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("lookout_alerts_signup_refused_total",
                                     {"reason": reason}) or 0.0


def _contact(settings: Settings, phone: str) -> Subscriber | None:
    with session_scope(settings.sqlalchemy_url) as session:
        return session.scalar(select(Subscriber).where(
            Subscriber.phone_hash == phone_lookup_hash(settings.secret_key, phone)))


def test_only_mobile_numbers_of_the_countries_served_get_a_code(
    use_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    assert use_settings.signup_countries == ["CA", "US"]  # the region catalog's countries
    before = _refused("country"), _refused("number_type")
    with _client() as client:
        for phone in ("+44 871 234 5678", "+53 5212 3456", "+1 900 555 0100",
                      "+1 800 555 0100"):
            status, page = _start(client, phone=phone)
            assert status == 422 and "areas we serve" in page, phone
        assert fake_twilio.messages() == []
        assert _start(client, phone="+882 123 456")[0] == 422  # not even a valid number
        assert _start(client, phone="+1 604 555 0100")[0] == 200  # Vancouver, BC
    assert [m["to"] for m in fake_twilio.messages()] == ["+16045550100"]
    assert (_refused("country") - before[0], _refused("number_type") - before[1]) == (2, 2)


def test_caps_per_client_and_in_all_trip_with_a_metric_and_a_log(
    use_settings: Settings, fake_twilio: FakeTwilioServer, caplog: pytest.LogCaptureFixture
) -> None:
    use_settings.signup_codes_per_client_per_hour = 3
    use_settings.signup_codes_per_hour = 5
    client_before, all_before = _refused("client_cap"), _refused("global_cap")
    caplog.set_level(logging.WARNING, logger="services.alerts.signup")
    with _client("203.0.113.7") as one:
        statuses = [_start(one, phone=f"+1206555{n:04d}")[0] for n in range(150, 155)]
    assert statuses == [200, 200, 200, 429, 429]
    # One IPv6 subscriber line (a /64) is one client, whatever address it takes in it.
    with _client("2001:db8:1:2::10") as v6, _client("2001:db8:1:2::99") as v6b:
        assert _start(v6, phone="+12065550160")[0] == 200
        assert _start(v6b, phone="+12065550161")[0] == 200
        assert _start(v6b, phone="+12065550162")[0] == 429  # the global cap: 5 an hour
    assert len(fake_twilio.messages()) == 5
    assert _refused("client_cap") - client_before == 2
    assert _refused("global_cap") - all_before == 1
    tripped = [r.getMessage() for r in caplog.records if "signup refused" in r.getMessage()]
    assert tripped == ["signup refused: client_cap of 3 codes an hour reached"] * 2 + [
        "signup refused: global_cap of 5 codes an hour reached"]
    assert client_key(use_settings.secret_key, "2001:db8:1:2::10") == \
        client_key(use_settings.secret_key, "2001:db8:1:2:ffff::1")
    assert client_key(use_settings.secret_key, "2001:db8:1:3::10") != \
        client_key(use_settings.secret_key, "2001:db8:1:2::10")


def test_the_form_needs_its_csrf_token(use_settings: Settings,
                                       fake_twilio: FakeTwilioServer) -> None:
    form = {"phone": "2065550177", "area": "98104", "language": "en", "consent": "yes"}
    with _client() as client:
        # A post from another site: no token (and the SameSite=Strict cookie is not sent).
        assert client.post("/signup", data=form).status_code == 403
        page = client.get("/signup")
        assert "samesite=strict" in page.headers["set-cookie"].lower()
        with _client() as other:  # a token from another browser does not match the cookie
            other_token = _csrf(other.get("/signup").text)
        assert client.post("/signup", data={**form, "csrf_token": other_token}).status_code \
            == 403
        assert client.post("/signup", data={**form, "csrf_token": _csrf(page.text)}) \
            .status_code == 200
    assert len(fake_twilio.messages()) == 1


def _same_page(page: str) -> str:
    return re.sub(r'value="[^"]{20,}"', 'value=""', page)


def test_stop_is_kept_nothing_changes_before_the_code_and_the_page_tells_nobody(
    use_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    stopped, active, unknown = "+12065550181", "+12065550182", "+12065550183"
    with session_scope(use_settings.sqlalchemy_url) as session:
        inbound.handle_inbound(session, use_settings, stopped, "JOIN 98104")
        inbound.handle_inbound(session, use_settings, stopped, "YES")
        inbound.handle_inbound(session, use_settings, stopped, "STOP")
    add_subscriber(use_settings, active, SEATTLE)
    pages = {}
    with _client() as client:
        for phone in (stopped, active, unknown):
            status, page = _start(client, phone=phone, area="98052", language="es")
            assert status == 200
            pages[phone] = page
        assert len({_same_page(p) for p in pages.values()}) == 1  # one answer for all
        # The stopped number is not texted, and stays stopped.
        assert sorted(m["to"] for m in fake_twilio.messages()) == [active, unknown]
        stopped_row = _contact(use_settings, stopped)
        assert stopped_row is not None and stopped_row.status == "stopped"
        # Nothing changed for the subscribed number before its code.
        from services.alerts import contacts

        def areas(phone: str) -> tuple[str, list[str]]:
            with session_scope(use_settings.sqlalchemy_url) as session:
                row = contacts.find(session, use_settings, phone)
                assert row is not None
                return row.language, contacts.areas_of(session, row)

        assert areas(active) == ("en", [SEATTLE])
        assert _contact(use_settings, unknown) is None
        # Any code for the stopped number's signup is refused like a wrong code.
        assert _confirm(client, pages[stopped], "123456")[0] == 422
        assert _contact(use_settings, stopped).status == "stopped"  # type: ignore[union-attr]
        # Once its code is confirmed, the subscribed number gets the new area and language.
        [code] = [re.findall(r"\b\d{6}\b", m["body"])[0] for m in fake_twilio.messages()
                  if m["to"] == active]
        assert _confirm(client, pages[active], code)[0] == 200
        assert areas(active) == ("es", [SEATTLE, "us/wa/king-county/98052"])


def test_parallel_wrong_codes_are_evaluated_at_most_the_limit(
    use_settings: Settings, fake_twilio: FakeTwilioServer
) -> None:
    limit = use_settings.signup_code_max_attempts
    with _client() as client:
        _status, page = _start(client)
        [sent] = fake_twilio.messages()
        wrong = "000000" if "000000" not in sent["body"] else "111111"
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: _confirm(client, page, wrong), range(20)))
    evaluated = [text for status, text in answers if status == 422]
    assert len(evaluated) == limit, [status for status, _ in answers]
    assert sorted(status for status, _ in answers) == [422] * limit + [429] * (20 - limit)
    with session_scope(use_settings.sqlalchemy_url) as session:
        request = session.scalar(select(SignupRequest))
        assert request is not None and request.attempts == limit
        assert request.code_hash is None  # burnt by the last wrong code
