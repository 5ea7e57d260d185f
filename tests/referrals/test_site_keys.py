"""Site staff refer with their site's own API key: ingest announces every key on
`sites.keys.v1` (through its outbox, in the key change's transaction); the referrals worker
keeps a replica of those with the `referrals` scope; the staff API checks the key there
(401/403 problem+json), honours revocation and records the referring site.

The events here travel from ingest's outbox to the worker's handler as the relay would carry
them (the payload as written); `test_site_keys_end_to_end` runs the real processes on a
broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.ingest.models import ApiKey
from services.ingest.models import OutboxMessage as IngestOutbox
from services.ingest.service.sites import add_key, create_site, revoke_key, rotate_key
from services.referrals import agents
from services.referrals import api as referrals_api
from services.referrals import models as m
from services.referrals.api import app
from services.referrals.notify import FakeNotifier, NoticeQueue
from shared.crypto import hash_api_key
from shared.db import session_scope
from shared.events import SiteKeyChangedV1
from shared.settings import Settings, get_settings
from shared.topics import SITE_KEYS
from tests.referrals.helpers import TUESDAY_10AM, load_directory

ADMIN = {"Authorization": "Bearer dev-admin-token"}
BODY = {"service_types": ["buprenorphine"], "postal_code": "98104",
        "consent": {"shared_fields": ["service_type"],
                    "wording": "Staff read this: we share the kind of help you need."}}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Ingest:
    """The ingest side: sites and keys through its service functions, its outbox relayed
    by hand to the referrals worker's handler."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.sqlalchemy_url
        self.relayed = 0

    def site(self, name: str, scopes: list[str]) -> tuple[uuid.UUID, str]:
        with session_scope(self.url) as session:
            site, key = create_site(session, name, scopes)
            return site.id, key

    def key_id(self, key: str) -> uuid.UUID:
        with session_scope(self.url) as session:
            return session.scalars(select(ApiKey.id).where(
                ApiKey.key_hash == hash_api_key(key))).one()

    def events(self) -> list[str]:
        with session_scope(self.url) as session:
            return list(session.scalars(select(IngestOutbox.payload).where(
                IngestOutbox.topic == SITE_KEYS.name).order_by(IngestOutbox.id)))

    def relay(self) -> list[SiteKeyChangedV1]:
        """Hand the new key events to the referrals worker, as the relay and Kafka would."""
        payloads = self.events()[self.relayed:]
        self.relayed += len(payloads)
        events = [SiteKeyChangedV1.model_validate_json(p) for p in payloads]
        for event in events:
            asyncio.run(agents.handle_site_key(event))
        return events


@pytest.fixture
def client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    load_directory(settings.sqlalchemy_url)
    monkeypatch.setattr(agents, "settings", settings)
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.notifier, app.state.notices = FakeNotifier(), NoticeQueue()
    with mock.patch.object(referrals_api, "utcnow", lambda: TUESDAY_10AM), \
            TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    app.state.notifier = app.state.notices = None


def test_a_site_key_with_the_referrals_scope_refers_and_the_referral_records_the_site(
        client: TestClient, settings: Settings) -> None:
    sites = Ingest(settings)
    site_id, key = sites.site("Harbor Outreach", ["results", "referrals"])
    problem(client.post("/v1/referrals", json=BODY, headers=bearer(key)), 401)  # not yet known
    [event] = sites.relay()
    assert (event.site_id, event.site_name, event.scopes) == (
        site_id, "Harbor Outreach", ["results", "referrals"])
    assert event.revoked_at is None and key not in event.model_dump_json()  # the hash only

    created = client.post("/v1/referrals", json=BODY, headers=bearer(key))
    assert created.status_code == 201, created.text
    referral = created.json()
    assert referral["site_id"] == str(site_id) and referral["source"] == "staff"
    assert referral["options"][0]["name"] == "Harbor Street Bupe Walk-in"
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.get(m.Referral, uuid.UUID(referral["id"]))
        assert row is not None and row.site_id == site_id

    # The site follows its own referral up: sees it, picks the option, reports the outcome.
    path = f"/v1/referrals/{referral['id']}"
    assert client.get(path, headers=bearer(key)).json()["site_id"] == str(site_id)
    chosen = client.post(f"{path}/choice", json={"option": 1}, headers=bearer(key))
    assert chosen.status_code == 200 and chosen.json()["status"] == "chosen"
    app.state.notices.join()  # the provider is told after the answer
    done = client.post(f"{path}/status", json={"status": "connected"}, headers=bearer(key))
    assert done.status_code == 200 and done.json()["status"] == "connected"
    history = client.get(path, headers=ADMIN).json()["history"]
    assert [(h["status"], h["actor"]) for h in history][-1] == ("connected", "staff")


def test_unknown_wrong_scope_other_site_and_admin_only_answers(
        client: TestClient, settings: Settings) -> None:
    sites = Ingest(settings)
    _, results_only = sites.site("Lab Only", ["results", "reports"])
    _, mine = sites.site("Site A", ["referrals"])
    _, theirs = sites.site("Site B", ["referrals"])
    announced = sites.relay()
    assert [e.site_name for e in announced] == ["Lab Only", "Site A", "Site B"]
    with session_scope(settings.sqlalchemy_url) as session:  # the replica keeps referrers
        kept = session.scalars(select(m.SiteKey.site_name).order_by(m.SiteKey.site_name))
        assert list(kept) == ["Site A", "Site B"]

    assert "Authorization" in problem(client.post("/v1/referrals", json=BODY), 401)["detail"]
    problem(client.post("/v1/referrals", json=BODY, headers=bearer("lk_made-up")), 401)
    problem(client.post("/v1/referrals", json=BODY, headers=bearer(results_only)), 401)
    created = client.post("/v1/referrals", json=BODY, headers=bearer(mine)).json()
    path = f"/v1/referrals/{created['id']}"
    problem(client.get(path, headers=bearer(theirs)), 404)
    assert client.get(path, headers=ADMIN).json()["site_id"] == created["site_id"]
    problem(client.post(f"/v1/referrals/{created['id']}/choice", json={"option": 1},
                        headers=bearer(theirs)), 404)
    problem(client.post(f"/v1/referrals/{created['id']}/status",
                        json={"status": "connected"}, headers=bearer(theirs)), 404)
    # Directory and statistics stay with the admin token.
    problem(client.get("/v1/referrals/stats", headers=bearer(mine)), 403)
    problem(client.patch("/v1/providers/services/svc-harbor-bup", json={"accepting": False},
                         headers=bearer(mine)), 403)

    # A key replicated without the scope (e.g. announced for another service) is refused.
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalars(select(m.SiteKey).where(m.SiteKey.site_name == "Site B")).one()
        row.scopes = ["reports"]
    body = problem(client.post("/v1/referrals", json=BODY, headers=bearer(theirs)), 403)
    assert "referrals" in body["detail"]


def test_revocation_and_rotation_are_honoured_and_final(client: TestClient,
                                                        settings: Settings) -> None:
    sites = Ingest(settings)
    site_id, key = sites.site("Rotating", ["referrals"])
    sites.relay()
    assert client.post("/v1/referrals", json=BODY, headers=bearer(key)).status_code == 201

    with session_scope(settings.sqlalchemy_url) as session:
        _, new_key = rotate_key(session, site_id, sites.key_id(key))
    revoked, added = sites.relay()
    assert revoked.revoked_at is not None and added.revoked_at is None
    assert "revoked" in problem(client.post("/v1/referrals", json=BODY, headers=bearer(key)),
                                401)["detail"]
    assert client.post("/v1/referrals", json=BODY, headers=bearer(new_key)).status_code == 201

    with session_scope(settings.sqlalchemy_url) as session:
        revoke_key(session, site_id, sites.key_id(new_key))
        revoke_key(session, site_id, sites.key_id(new_key))  # again: no new event
    [revoked_new] = sites.relay()
    problem(client.post("/v1/referrals", json=BODY, headers=bearer(new_key)), 401)

    # Redelivered and out-of-order events change nothing: the creation of the key arriving
    # again after its revocation does not bring it back.
    for event in (added, revoked_new, added):
        asyncio.run(agents.handle_site_key(event))
    problem(client.post("/v1/referrals", json=BODY, headers=bearer(new_key)), 401)
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(select(m.SiteKey).where(m.SiteKey.site_id == site_id)).all()
        assert len(rows) == 2 and all(r.revoked_at is not None for r in rows)


def test_an_added_key_is_announced_and_the_admin_token_still_refers(
        client: TestClient, settings: Settings) -> None:
    sites = Ingest(settings)
    site_id, results_key = sites.site("Adds a key", ["results"])
    with session_scope(settings.sqlalchemy_url) as session:
        _, key = add_key(session, site_id, ["referrals"])
    first, event = sites.relay()
    assert first.scopes == ["results"] and event.scopes == ["referrals"]
    assert event.site_id == site_id
    problem(client.post("/v1/referrals", json=BODY, headers=bearer(results_key)), 401)
    assert client.post("/v1/referrals", json=BODY, headers=bearer(key)).status_code == 201
    by_admin = client.post("/v1/referrals", json=BODY, headers=ADMIN)
    assert by_admin.status_code == 201 and by_admin.json()["site_id"] is None
