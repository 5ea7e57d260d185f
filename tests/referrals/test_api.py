"""The referrals HTTP API: help page, staff referrals with consent, provider link and API,
directory availability; the webhook notifier against a local HTTP server."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from unittest import mock

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from migrations import alembic_config, upgrade
from services.referrals import api as referrals_api
from services.referrals import models as m
from services.referrals import pages as referrals_pages
from services.referrals import service
from services.referrals.api import app
from services.referrals.notify import FakeNotifier, NoticeQueue
from shared.crypto import decrypt_phone
from shared.db import get_engine, session_scope
from shared.settings import Settings, get_settings
from tests.referrals.helpers import TUESDAY_10AM, load_directory, statuses

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CONSENT = "Staff read this to the person: we share what you tick with the place you pick."


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    load_directory(settings.sqlalchemy_url)
    near = settings.model_copy(update={"referrals_max_distance_km": 20.0})
    app.dependency_overrides[get_settings] = lambda: near
    app.state.notifier, app.state.notices = FakeNotifier(), NoticeQueue()
    referrals_pages._link_limiters.clear()  # each test starts with full link buckets
    # The API stamps real time; pin it to a Tuesday morning so the sample clinics are open.
    with mock.patch.object(referrals_api, "utcnow", lambda: TUESDAY_10AM), \
            mock.patch.object(referrals_pages, "utcnow", lambda: TUESDAY_10AM), \
            TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    app.state.notifier = app.state.notices = None


def _choose(client: TestClient, referral_id: object) -> dict[str, object]:
    """Pick option 1; the answer comes before the provider is told (in the background)."""
    response = client.post(f"/v1/referrals/{referral_id}/choice", json={"option": 1},
                           headers=ADMIN)
    assert response.status_code == 200, response.text
    app.state.notices.join()
    return dict(response.json())


def _staff(client: TestClient, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "service_types": ["buprenorphine"], "postal_code": "98104", "language": "en",
        "payment": "medicaid", "age": 34, "note": "prefers mornings",
        "callback_phone": "+12065550177",
        "consent": {"shared_fields": ["service_type", "language", "callback_phone"],
                    "wording": CONSENT}}
    body.update(overrides)
    response = client.post("/v1/referrals", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def test_staff_referral_matches_and_the_notice_carries_only_consented_fields(
        client: TestClient, settings: Settings) -> None:
    created = _staff(client)
    options = created["options"]
    assert isinstance(options, list)
    assert [o["name"] for o in options] == ["Harbor Street Bupe Walk-in"]  # Federal Way: > 20 km
    assert "takes medicaid" in options[0]["reasons"]

    assert _choose(client, created["id"])["status"] == "chosen"  # answered first
    [(_channel, _address, notice)] = app.state.notifier.sent
    assert notice["callback_phone"] == "+12065550177"  # consented
    assert notice["service_types"] == ["buprenorphine"] and notice["language"] == "en"
    for withheld in ("note", "age", "payment", "region"):
        assert withheld not in notice
    assert statuses(settings.sqlalchemy_url) == ["requested", "options_sent", "chosen",
                                                 "provider_notified"]


def test_without_consent_the_phone_is_not_shared(client: TestClient) -> None:
    created = _staff(client, consent={"shared_fields": ["service_type"], "wording": CONSENT})
    _choose(client, created["id"])
    [(_c, _a, notice)] = app.state.notifier.sent
    assert "callback_phone" not in notice and "language" not in notice
    assert "+12065550177" not in str(notice)


def test_staff_api_needs_the_admin_token_and_valid_input(client: TestClient) -> None:
    assert client.post("/v1/referrals", json={}).status_code == 401
    bad = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["astrology"], "postal_code": "98104",
        "consent": {"wording": CONSENT}})
    assert bad.status_code == 422 and bad.json()["title"] == "Unknown service type"
    bad = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["buprenorphine"], "postal_code": "98104",
        "consent": {"shared_fields": ["name"], "wording": CONSENT}})
    assert bad.status_code == 422 and bad.json()["title"] == "Unknown consent field"
    nowhere = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["buprenorphine"], "consent": {"wording": CONSENT}})
    assert nowhere.status_code == 422 and nowhere.json()["title"] == "Location required"
    coarse = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["buprenorphine"], "region_id": "us/wa/nowhere-county/00000",
        "consent": {"wording": CONSENT}})
    assert coarse.status_code == 422 and coarse.json()["title"] == "Unknown region"
    nul = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["buprenorphine"], "postal_code": "98104", "note": "a\x00b",
        "consent": {"wording": CONSENT}})
    assert nul.status_code == 422


def test_provider_updates_through_the_signed_link(client: TestClient,
                                                  settings: Settings) -> None:
    created = _staff(client)
    _choose(client, created["id"])
    [(_c, _a, notice)] = app.state.notifier.sent
    path = notice["status_link"].removeprefix("http://127.0.0.1:8002")
    token = re.search(r"t=([0-9.a-f]+)", path).group(1)  # type: ignore[union-attr]
    page = client.get(path)
    assert page.status_code == 200 and "provider notified" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert client.get(f"/r/{created['id']}?t={'0' * 32}").status_code == 404
    forged = client.post(f"/r/{created['id']}", data={"t": "0" * 32, "status": "connected"})
    assert forged.status_code == 404
    done = client.post(f"/r/{created['id']}", data={"t": token, "status": "connected"})
    assert done.status_code == 200 and "recorded as connected" in done.text
    assert statuses(settings.sqlalchemy_url)[-1] == "connected"
    again = client.post(f"/v1/referrals/{created['id']}/status", json={"status": "declined"},
                        headers=ADMIN)
    assert again.status_code == 409


def test_provider_api_status_and_history(client: TestClient) -> None:
    created = _staff(client)
    _choose(client, created["id"])
    response = client.post(f"/v1/referrals/{created['id']}/status",
                           json={"status": "connected"}, headers=ADMIN)
    assert response.status_code == 200 and response.json()["status"] == "connected"
    full = client.get(f"/v1/referrals/{created['id']}", headers=ADMIN).json()
    assert [h["status"] for h in full["history"]] == [
        "requested", "options_sent", "chosen", "provider_notified", "connected"]
    assert full["notices"][0]["status"] == "sent"
    stats = client.get("/v1/referrals/stats", headers=ADMIN).json()
    assert stats["by_status"] == {"connected": 1} and stats["by_source"] == {"staff": 1}


def test_admin_sets_capacity_and_availability(client: TestClient) -> None:
    response = client.patch("/v1/providers/services/svc-harbor-bup", headers=ADMIN,
                            json={"capacity_available": 0})
    assert response.status_code == 200 and response.json()["capacity_available"] == 0
    created = _staff(client)
    assert created["options"] == []  # the only nearby bupe clinic is now full
    client.patch("/v1/providers/services/svc-harbor-bup", headers=ADMIN,
                 json={"capacity_available": 3, "accepting": False})
    assert _staff(client)["options"] == []
    client.patch("/v1/providers/services/svc-harbor-bup", headers=ADMIN,
                 json={"accepting": True})
    assert len(_staff(client)["options"]) == 1  # type: ignore[arg-type]
    listed = client.get("/v1/providers/services?service_type=buprenorphine",
                        headers=ADMIN).json()
    assert {s["id"] for s in listed} == {"svc-harbor-bup", "svc-south-bup"}
    assert client.patch("/v1/providers/services/nope", headers=ADMIN,
                        json={"accepting": True}).status_code == 404
    assert client.patch("/v1/providers/services/svc-harbor-bup",
                        json={"accepting": True}).status_code == 401


def test_help_page_shows_consent_and_matches(client: TestClient, settings: Settings) -> None:
    page = client.get("/help")
    assert page.status_code == 200
    assert "then deletes it" in page.text and "Do not enter your name" in page.text
    refused = client.post("/help", data={"service_type": "buprenorphine", "place": "98104"})
    assert refused.status_code == 422 and "tick the box" in refused.text
    unknown = client.post("/help", data={"service_type": "buprenorphine", "place": "Atlantis",
                                         "consent": "yes"})
    assert unknown.status_code == 422 and "know that place" in unknown.text
    found = client.post("/help", data={"service_type": "buprenorphine", "place": "98104",
                                       "payment": "medicaid", "consent": "yes"})
    assert found.status_code == 200
    assert "Harbor Street Bupe Walk-in" in found.text and "206-555-0101" in found.text
    assert "Why:" in found.text and "takes medicaid" in found.text
    assert statuses(settings.sqlalchemy_url) == ["requested", "options_sent"]


def test_link_tokens_are_bound_to_referral_provider_and_expiry(settings: Settings) -> None:
    rid, expires = uuid.uuid4(), 1_800_000_000
    token = service.link_token(settings, rid, "svc-a", expires)
    assert token.startswith(f"{expires}.")
    assert token != service.link_token(settings, rid, "svc-b", expires)
    assert token != service.link_token(settings, uuid.uuid4(), "svc-a", expires)
    assert token != service.link_token(settings, rid, "svc-a", expires + 1)
    other = settings.model_copy(update={"secret_key": "another-secret"})
    assert token != service.link_token(other, rid, "svc-a", expires)
    assert isinstance(TUESDAY_10AM, datetime)


def _link(client: TestClient) -> tuple[str, str]:
    """A referral handed off; (its id, the token of its provider's link)."""
    created = _staff(client)
    _choose(client, created["id"])
    [(_c, _a, notice)] = app.state.notifier.sent
    token = re.search(r"t=([0-9.a-f]+)", notice["status_link"]).group(1)  # type: ignore[union-attr]
    return str(created["id"]), token


def test_an_unknown_referral_and_a_wrong_token_get_the_same_answer(
        client: TestClient) -> None:
    rid, token = _link(client)
    stamp = token.partition(".")[0]
    answers = [client.get(f"/r/{uuid.uuid4()}?t={token}"),  # a real token, no such referral
               client.get(f"/r/{rid}?t={stamp}.{'0' * 32}"),  # the referral, a forged token
               client.get(f"/r/{rid}?t="),
               client.post(f"/r/{uuid.uuid4()}", data={"t": token, "status": "connected"}),
               client.post(f"/r/{rid}", data={"t": f"{stamp}.{'0' * 32}",
                                               "status": "connected"})]
    bodies = [{k: v for k, v in a.json().items() if k != "instance"} for a in answers]
    assert [a.status_code for a in answers] == [404] * 5  # `instance` is the path asked
    assert all(b == {"type": "about:blank", "title": "Not found", "status": 404,
                     "detail": "This link is not valid."} for b in bodies), bodies
    assert all(a.headers["Referrer-Policy"] == "no-referrer" for a in answers)


def test_a_provider_link_expires(client: TestClient, settings: Settings) -> None:
    rid, token = _link(client)
    expires = datetime.fromtimestamp(int(token.partition(".")[0]), TUESDAY_10AM.tzinfo)
    assert expires == TUESDAY_10AM + timedelta(days=settings.referrals_link_days)
    with mock.patch.object(referrals_pages, "utcnow", lambda: expires - timedelta(seconds=1)):
        assert client.get(f"/r/{rid}?t={token}").status_code == 200
    with mock.patch.object(referrals_pages, "utcnow", lambda: expires):
        late = client.get(f"/r/{rid}?t={token}")
        assert late.status_code == 410 and "expired" in late.json()["detail"]
        post = client.post(f"/r/{rid}", data={"t": token, "status": "connected"})
        assert post.status_code == 410
    # A token whose expiry was moved later no longer matches its signature.
    moved = f"{int(expires.timestamp()) + 86400}.{token.partition('.')[2]}"
    assert client.get(f"/r/{rid}?t={moved}").status_code == 404


def test_provider_links_are_throttled_per_client(client: TestClient,
                                                 settings: Settings) -> None:
    rid, token = _link(client)
    tight = settings.model_copy(update={"referrals_max_distance_km": 20.0,
                                        "referrals_link_rate_per_minute": 0.01,
                                        "referrals_link_burst": 5})
    app.dependency_overrides[get_settings] = lambda: tight
    forged = f"{token.partition('.')[0]}.{'0' * 32}"
    codes = [client.get(f"/r/{rid}?t={forged}").status_code for _ in range(8)]
    assert codes == [404] * 5 + [429] * 3
    refused = client.get(f"/r/{rid}?t={token}")  # even the right token, while throttled
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_the_callback_number_is_not_stored_in_clear_with_the_notice(
        client: TestClient, settings: Settings) -> None:
    created = _staff(client)
    _choose(client, created["id"])
    [(_c, _a, notice)] = app.state.notifier.sent
    assert notice["callback_phone"] == "+12065550177"  # the provider is told
    with session_scope(settings.sqlalchemy_url) as session:
        stored = session.scalars(select(m.ProviderNotice)).one()
        assert stored.payload is not None and "2065550177" not in json.dumps(stored.payload)
        assert stored.payload["callback_phone_ref"] == service.PHONE_REFERENCE
        referral = session.get(m.Referral, uuid.UUID(str(created["id"])))
        assert referral is not None and referral.callback_phone_encrypted
        assert decrypt_phone(settings.secret_key,
                             referral.callback_phone_encrypted) == "+12065550177"


def test_the_migration_takes_the_number_out_of_existing_notices(settings: Settings) -> None:
    url = settings.sqlalchemy_url
    # Made at head (today's models write columns the old schema lacks), then taken back.
    with session_scope(url) as session:
        referral = service.create_referral(
            session, settings, source="staff", now=TUESDAY_10AM, service_types=["naloxone"],
            consent=service.ConsentIn(["callback_phone"], CONSENT, "staff"))
        session.add(m.ProviderNotice(referral_id=referral.id, service_id="svc-a",
                                     channel="webhook", status="sent", payload={}))
    get_engine(url).dispose()
    command.downgrade(alembic_config(url), "referrals_0003")
    with get_engine(url).begin() as conn:  # the notice as the code before this change stored it
        conn.execute(update(m.ProviderNotice).values(payload={
            "referral_id": str(referral.id), "callback_phone": "+12065550177"}))
    get_engine(url).dispose()
    upgrade(url)
    with session_scope(url) as session:
        [payload] = session.scalars(select(m.ProviderNotice.payload)).all()
        assert payload is not None and "callback_phone" not in payload
        assert payload["callback_phone_ref"] == service.PHONE_REFERENCE
