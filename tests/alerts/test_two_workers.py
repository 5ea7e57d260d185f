"""Two alerts workers as real processes against Tansu, PostgreSQL and the fake Twilio server
(real twilio SDK): one is killed with SIGKILL in the middle of a fan-out to 10,000
subscribers. Each subscriber gets exactly one SMS (counted at the fake server), and the
dispatcher's timer jobs (expiry, marking the alert sent) run once for both workers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from services.alerts.models import Alert, OutboxMessage
from shared.broker import free_port
from shared.db import get_engine
from shared.topics import ALERT_EVENTS
from testing.alerts_stack import (
    SECRET,
    Stack,
    phone_of,
    publish_signal,
    seed_subscribers,
    wait_until,
)
from testing.twilio_server import FakeTwilioServer

COUNT = 10_000
SENDERS = {"a": "+15005550006", "b": "+12065550100"}  # each worker its own sender number
EXPIRING = 12  # drafts that expire while both workers run


def _seed_expiring_drafts(url: str, start_in: float) -> list[uuid.UUID]:
    """Drafts (no review will come) that expire one after the other, half a second apart."""
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(EXPIRING)]
    with get_engine(url).begin() as conn:
        conn.execute(insert(Alert), [
            {"id": alert_id, "region_id": "us/wa/king-county/98101", "region_name": "Seattle",
             "substance_id": f"test-{i}", "severity": "warning", "status": "draft",
             "body_en": "test", "texts": {"en": "test"}, "segments": 1, "kind": "alert",
             "signal_count": 1, "created_at": now,
             "expires_at": now + timedelta(seconds=start_in + i / 2)}
            for i, alert_id in enumerate(ids)])
    return ids


def _alert_events(url: str) -> Counter[tuple[str, str]]:
    """(alert id, action) of every alerts.events.v1 row in the alerts outbox."""
    with get_engine(url).connect() as conn:
        payloads = conn.execute(select(OutboxMessage.payload)
                                .where(OutboxMessage.topic == ALERT_EVENTS.name)).scalars()
        return Counter((e["alert_id"], e["action"]) for e in map(json.loads, payloads))


def _statuses(url: str, ids: list[uuid.UUID]) -> set[str]:
    with get_engine(url).connect() as conn:
        return set(conn.execute(select(Alert.status).where(Alert.id.in_(ids))).scalars())


def test_two_workers_one_killed_mid_fan_out_each_subscriber_exactly_one_sms(
    tmp_path: Path, pg_url: str, bootstrap: str, fake_twilio: FakeTwilioServer
) -> None:
    stack = Stack(tmp_path, bootstrap, fake_twilio.url, rate=300, database_url=pg_url)
    started = time.monotonic()
    seed_subscribers(pg_url, SECRET, COUNT)
    seeded = time.monotonic() - started
    assert seeded < 60, f"seeding {COUNT} subscribers took {seeded:.0f} s"
    # Without status callbacks: 20,000 of them would only load the machine here.
    ports = {name: free_port() for name in SENDERS}
    workers = {name: stack.start("alerts-worker", label=f"worker-{name}",
                                 LOOKOUT_PUBLIC_ALERTS_URL="", LOOKOUT_TWILIO_FROM=number,
                                 LOOKOUT_ALERTS_WORKER_METRICS_PORT=str(ports[name]))
               for name, number in SENDERS.items()}
    try:
        for port in ports.values():
            stack.wait_metrics(port)
        time.sleep(5)  # both in the consumer groups (the sends below show both took part)
        drafts = _seed_expiring_drafts(pg_url, start_in=2)
        alert_signal = asyncio.run(publish_signal(bootstrap))

        def sent_by(name: str) -> int:
            return sum(1 for m in fake_twilio.messages() if m["from"] == SENDERS[name])

        assert wait_until(lambda: sent_by("a") >= 1500 and sent_by("b") >= 1500, 180), \
            f"the fan-out did not get going on both workers ({sent_by('a')}, {sent_by('b')})"
        # The drafts expire while both workers' dispatchers tick.
        assert wait_until(lambda: _statuses(pg_url, drafts) == {"expired"}, 30), \
            f"the drafts did not all expire: {_statuses(pg_url, drafts)}"
        workers["a"].send_signal(signal.SIGKILL)
        workers["a"].wait(10)
        at_kill = len(fake_twilio.messages())
        assert at_kill < COUNT - 1000, "the fan-out was nearly over at the kill"

        def texted() -> int:
            return len({m["to"] for m in fake_twilio.messages()})

        assert wait_until(lambda: texted() == COUNT, 300), \
            f"only {texted()} of {COUNT} subscribers got the alert"
        # Late copies (a reconcile of a delivery stuck `sending`, a redelivered job) would
        # show within a few stale periods (LOOKOUT_SMS_STALE_SENDING_SECONDS=2).
        time.sleep(8)
        messages = fake_twilio.messages()
        counts = Counter(m["to"] for m in messages)
        doubles = {to: n for to, n in counts.items() if n != 1}
        assert not doubles, f"{len(doubles)} subscribers got more than one SMS"
        assert set(counts) == {phone_of(i) for i in range(COUNT)}
        assert len(messages) == COUNT
        assert sent_by("b") > COUNT - at_kill, "the survivor did not take over the rest"

        events = _alert_events(pg_url)
        for draft in drafts:
            assert events[(str(draft), "expired")] == 1, "an expiry ran more or less than once"
        with get_engine(pg_url).connect() as conn:
            alert_id = conn.execute(select(Alert.id).where(Alert.kind == "alert",
                                                           Alert.status != "expired")
                                    ).scalar_one()
        assert wait_until(lambda: _statuses(pg_url, [alert_id]) == {"sent"}, 30)
        events = _alert_events(pg_url)
        assert events[(str(alert_id), "sending")] == 1
        assert events[(str(alert_id), "sent")] == 1, "the alert was marked sent twice"
        assert alert_signal is not None
    finally:
        stack.stop_all()
