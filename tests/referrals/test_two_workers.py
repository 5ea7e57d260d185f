"""Two referrals workers as real processes against Tansu and PostgreSQL, both ticking every
0.2 s while follow-ups, silences and purges come due one after the other: each follow-up is
asked for once (one `sms.requests.v1` row in the outbox, which the relay publishes and the
alerts sender texts once per request id), each silence and each purge closes its referral
once (one `no_response` event). Then two worker-like threads picking stuck provider notices
against one PostgreSQL database with a provider slower than their ticks: each notice is sent
once (the claim in `service.claim_notice`)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from services.referrals import agents, service
from services.referrals import models as m
from services.referrals.notify import FakeNotifier
from shared.broker import free_port
from shared.db import get_engine, session_scope
from shared.settings import Settings
from shared.topics import REFERRAL_EVENTS, SMS_REQUESTS
from testing.alerts_stack import Stack, tansu, wait_until
from tests.referrals.helpers import TUESDAY_10AM, load_directory, reply, requested

EACH = 60  # referrals per kind of due work
DELAY = 3.0  # follow-up delay and silence, seconds (the workers' settings)


def _seed(url: str, start: datetime) -> dict[str, list[uuid.UUID]]:
    """Referrals whose follow-up, silence or purge comes due 0.1 s apart over 6 s."""
    kinds: dict[str, list[uuid.UUID]] = {"followup": [], "silence": [], "purge": []}
    referrals, consents = [], []
    for i in range(EACH):
        due = start + timedelta(seconds=i / 10)
        for kind, ids in kinds.items():
            referral_id = uuid.uuid4()
            ids.append(referral_id)
            row = {"id": referral_id, "source": "sms", "contact_ref": uuid.uuid4(),
                   "service_types": ["buprenorphine"], "language": "en",
                   "region_id": "us/wa/king-county/98104", "options": [],
                   "created_at": start - timedelta(days=1), "updated_at": start,
                   "chosen_service_id": None, "notified_at": None, "options_sent_at": None}
            if kind == "followup":  # provider notified; the follow-up due at `due`
                row |= {"status": "provider_notified", "awaiting": "handoff",
                        "chosen_service_id": "svc-harbor-bup",
                        "notified_at": due - timedelta(seconds=DELAY)}
            elif kind == "silence":  # options sent, never answered: silent at `due`
                row |= {"status": "options_sent", "awaiting": "choice",
                        "options_sent_at": due - timedelta(seconds=DELAY)}
            else:  # waiting for a location; its consent runs out at `due`
                row |= {"status": "requested", "awaiting": "location"}
            referrals.append(row)
            consents.append({
                "id": uuid.uuid4(), "referral_id": referral_id, "shared_fields": [],
                "shared_with": "the one provider the person chooses", "channel": "sms",
                "wording": "test", "given_at": start - timedelta(days=1),
                "retain_until": due if kind == "purge" else start + timedelta(days=30)})
    with get_engine(url).begin() as conn:
        conn.execute(insert(m.Referral), referrals)
        conn.execute(insert(m.Consent), consents)
    return kinds


def _outbox(url: str, topic: str) -> list[dict[str, object]]:
    with get_engine(url).connect() as conn:
        return [json.loads(p) for p in conn.execute(
            select(m.OutboxMessage.payload).where(m.OutboxMessage.topic == topic)).scalars()]


def test_two_workers_send_each_follow_up_once_and_close_each_referral_once(
    tmp_path: Path, pg_url: str
) -> None:
    with tansu() as bootstrap:
        stack = Stack(tmp_path, bootstrap, "http://127.0.0.1:9", database_url=pg_url)
        env = {"LOOKOUT_REFERRALS_TICK_SECONDS": "0.2",
               "LOOKOUT_REFERRALS_FOLLOWUP_DELAY_SECONDS": str(DELAY),
               "LOOKOUT_REFERRALS_NO_RESPONSE_SECONDS": str(DELAY)}
        ports = [free_port(), free_port()]
        try:
            for n, port in enumerate(ports):
                stack.start("referrals-worker", label=f"referrals-worker-{n}",
                            LOOKOUT_REFERRALS_WORKER_METRICS_PORT=str(port), **env)
            for port in ports:
                stack.wait_metrics(port)
            time.sleep(3)  # both workers' timers running
            assert all(p.poll() is None for p in stack.procs.values())
            kinds = _seed(pg_url, datetime.now(UTC) + timedelta(seconds=2))
            with get_engine(pg_url).connect() as conn:
                contacts = {str(c): r for c, r in conn.execute(
                    select(m.Referral.contact_ref, m.Referral.id)
                    .where(m.Referral.id.in_(kinds["followup"]))).all()}

            def follow_ups() -> Counter[uuid.UUID | None]:
                return Counter(contacts.get(str(e["contact_ref"]))
                               for e in _outbox(pg_url, SMS_REQUESTS.name)
                               if e["purpose"] == "referral_followup")

            assert wait_until(lambda: set(follow_ups()) == set(kinds["followup"]), 60), \
                f"{len(follow_ups())} of {EACH} follow-ups asked for"
            # Everything due (the followed-up ones go silent DELAY after their follow-up).
            with get_engine(pg_url).connect() as conn:
                def open_left() -> int:
                    return len(conn.execute(select(m.Referral.id).where(
                        m.Referral.status.not_in(("no_response",)))).all())
                assert wait_until(lambda: open_left() == 0, 60), f"{open_left()} still open"
            time.sleep(2)  # a second run of any job would show now
            assert all(p.poll() is None for p in stack.procs.values()), "a worker died"
            counts = follow_ups()
            assert set(counts) == set(kinds["followup"])
            assert max(counts.values()) == 1, \
                f"{sum(1 for n in counts.values() if n > 1)} follow-ups sent twice"
            closed = Counter(str(e["referral_id"]) for e in _outbox(pg_url, REFERRAL_EVENTS.name)
                             if e["status"] == "no_response")
            every = [str(r) for ids in kinds.values() for r in ids]
            assert set(closed) == set(every)
            assert max(closed.values()) == 1, \
                f"{sum(1 for n in closed.values() if n > 1)} referrals closed twice"
            with get_engine(pg_url).connect() as conn:
                purged = conn.execute(select(m.Referral.id, m.Referral.contact_ref).where(
                    m.Referral.purged_at.is_not(None))).all()
            assert {r for r, _c in purged} == set(kinds["purge"])
            assert all(c is None for _r, c in purged)
            # Both workers did some of it: each logged ticks.
            logs = {label: (tmp_path / f"{label}.log").read_text() for label in stack.procs}
            assert all("referrals tick" in text for text in logs.values()), \
                "one of the workers never did any of the due work"
        finally:
            stack.stop_all()


class SlowNotifier(FakeNotifier):
    """A provider that takes `seconds` to answer each notice (slower than a tick)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._lock = threading.Lock()

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        time.sleep(self.seconds)
        with self._lock:
            self.sent.append((channel, address, notice))


STUCK = 6  # chosen referrals whose notice was never recorded


def test_two_workers_send_each_stuck_notice_once(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(env="test", database_url=pg_url, var_dir=tmp_path / "var")
    load_directory(pg_url)
    clock = TUESDAY_10AM
    stuck: list[uuid.UUID] = []
    for _ in range(STUCK):  # chosen, then the worker died before the notice
        contact = uuid.uuid4()
        with session_scope(pg_url) as session:
            service.handle_request(session, settings, requested(contact), clock)
        with session_scope(pg_url) as session:
            handoff = service.handle_reply(session, settings, reply(contact, "1"), clock)
            assert handoff is not None
            stuck.append(handoff.referral_id)
    later = clock + timedelta(minutes=2)
    notifier = SlowNotifier(0.3)  # each tick's stuck notices take 1.8 s to send
    monkeypatch.setattr(agents, "settings", settings)
    monkeypatch.setattr(agents, "clock", lambda: later)
    monkeypatch.setattr(agents, "notifier", notifier)

    def recorded() -> int:
        with get_engine(pg_url).connect() as conn:
            return len(conn.execute(select(m.ProviderNotice.id)).all())

    errors: list[BaseException] = []

    def worker() -> None:  # a referrals worker's timer, ticking every 0.1 s
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline and recorded() < STUCK:
                agents.run_tick()
                time.sleep(0.1)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    sent = Counter(uuid.UUID(str(n["referral_id"])) for _c, _a, n in notifier.sent)
    assert set(sent) == set(stuck)
    assert max(sent.values()) == 1, \
        f"{sum(1 for n in sent.values() if n > 1)} of {STUCK} notices sent twice"
    assert recorded() == STUCK
    with get_engine(pg_url).connect() as conn:
        assert set(conn.execute(select(m.Referral.status).where(
            m.Referral.id.in_(stuck))).scalars()) == {"provider_notified"}
