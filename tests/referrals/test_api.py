"""The referrals HTTP API: help page, staff referrals with consent, provider link and API,
directory availability; the webhook notifier against a local HTTP server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from services.referrals import api as referrals_api
from services.referrals import service
from services.referrals.api import app
from services.referrals.notify import FakeNotifier, NotifierError, WebhookNotifier
from shared.settings import Settings, get_settings
from tests.referrals.helpers import TUESDAY_10AM, load_directory, statuses
from tests.referrals.webhook_server import WebhookServer

ADMIN = {"Authorization": "Bearer dev-admin-token"}
CONSENT = "Staff read this to the person: we share what you tick with the place you pick."


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    load_directory(settings.sqlalchemy_url)
    near = settings.model_copy(update={"referrals_max_distance_km": 20.0})
    app.dependency_overrides[get_settings] = lambda: near
    app.state.notifier = FakeNotifier()
    # The API stamps real time; pin it to a Tuesday morning so the sample clinics are open.
    with mock.patch.object(referrals_api, "utcnow", lambda: TUESDAY_10AM), \
            TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    app.state.notifier = None


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

    response = client.post(f"/v1/referrals/{created['id']}/choice", json={"option": 1},
                           headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "provider_notified"
    [(_channel, _address, notice)] = app.state.notifier.sent
    assert notice["callback_phone"] == "+12065550177"  # consented
    assert notice["service_types"] == ["buprenorphine"] and notice["language"] == "en"
    for withheld in ("note", "age", "payment", "region"):
        assert withheld not in notice
    assert statuses(settings.sqlalchemy_url) == ["requested", "options_sent", "chosen",
                                                 "provider_notified"]


def test_without_consent_the_phone_is_not_shared(client: TestClient) -> None:
    created = _staff(client, consent={"shared_fields": ["service_type"], "wording": CONSENT})
    client.post(f"/v1/referrals/{created['id']}/choice", json={"option": 1}, headers=ADMIN)
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
    client.post(f"/v1/referrals/{created['id']}/choice", json={"option": 1}, headers=ADMIN)
    [(_c, _a, notice)] = app.state.notifier.sent
    path = notice["status_link"].removeprefix("http://127.0.0.1:8002")
    token = re.search(r"t=([0-9a-f]+)", path).group(1)  # type: ignore[union-attr]
    page = client.get(path)
    assert page.status_code == 200 and "provider notified" in page.text
    assert client.get(f"/r/{created['id']}?t={'0' * 32}").status_code == 403
    forged = client.post(f"/r/{created['id']}", data={"t": "0" * 32, "status": "connected"})
    assert forged.status_code == 403
    done = client.post(f"/r/{created['id']}", data={"t": token, "status": "connected"})
    assert done.status_code == 200 and "recorded as connected" in done.text
    assert statuses(settings.sqlalchemy_url)[-1] == "connected"
    again = client.post(f"/v1/referrals/{created['id']}/status", json={"status": "declined"},
                        headers=ADMIN)
    assert again.status_code == 409


def test_provider_api_status_and_history(client: TestClient) -> None:
    created = _staff(client)
    client.post(f"/v1/referrals/{created['id']}/choice", json={"option": 1}, headers=ADMIN)
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


def test_webhook_notifier_posts_json_to_the_provider() -> None:
    notice = {"referral_id": str(uuid.uuid4()), "language": "es"}
    with WebhookServer() as hook:
        WebhookNotifier().send("webhook", hook.url, notice)
    assert hook.received == [{"path": "/hook", "content_type": "application/json",
                              "json": notice}]
    with WebhookServer(status=500) as hook, pytest.raises(NotifierError, match="500"):
        WebhookNotifier().send("webhook", hook.url, notice)
    with pytest.raises(NotifierError, match="unreachable"):
        WebhookNotifier(timeout=1).send("webhook", "http://127.0.0.1:9/hook", notice)


def test_link_tokens_are_bound_to_referral_and_provider(settings: Settings) -> None:
    rid = uuid.uuid4()
    token = service.link_token(settings, rid, "svc-a")
    assert token != service.link_token(settings, rid, "svc-b")
    assert token != service.link_token(settings, uuid.uuid4(), "svc-a")
    other = settings.model_copy(update={"secret_key": "another-secret"})
    assert token != service.link_token(other, rid, "svc-a")
    assert isinstance(TUESDAY_10AM, datetime)
