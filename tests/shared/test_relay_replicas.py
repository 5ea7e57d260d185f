"""Several relays (shared.relay): one active per outbox table, the other standing by; the
active one killed mid-stream, the standby takes over within 5 s, and every outbox row is on
its topic exactly once, in order per key (real processes, the real broker, PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from services.ingest.models import OutboxMessage
from services.stack import command
from shared.db import session_scope, utcnow
from shared.kafka import make_producer
from shared.outbox import _pending, _send
from shared.relay import reconcile
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS
from tests.conftest import REPO_ROOT, free_port
from tests.ingest.test_relay import ZIPS, _consume, _submit, _unpublished

ROWS = 3000


def _stream(url: str, stop_after: int, done: threading.Event) -> None:
    """Outbox rows in transactions of 30, about 1,000 a second, until `stop_after`."""
    for start in range(0, stop_after, 30):
        with session_scope(url) as session:
            for i in range(start, start + 30):
                session.add(OutboxMessage(topic=DRUGCHECK_RESULTS.name, key=ZIPS[i % len(ZIPS)],
                                          payload=json.dumps({"sample_id": f"s-{i:05d}"}),
                                          created_at=utcnow()))
        time.sleep(0.03)
    done.set()


def _active_at(log: Path) -> datetime | None:
    for line in log.read_text().splitlines():
        if "relay: active for ingest_outbox" in line:
            return datetime.fromisoformat(json.loads(line)["ts"])
    return None


def test_the_standby_relay_takes_over_and_publishes_every_row_once(
    pg_url: str, own_broker: str, tmp_path: Path
) -> None:
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_DATABASE_URL": pg_url,
           "LOOKOUT_KAFKA_BOOTSTRAP": own_broker, "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
           "LOOKOUT_VAR_DIR": str(tmp_path)}
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    procs = []
    for log in logs:
        with log.open("w") as fh:
            procs.append(subprocess.Popen(
                [*command("relay"), "ingest"], cwd=REPO_ROOT, stdout=fh,
                stderr=subprocess.STDOUT,
                env={**env, "LOOKOUT_RELAY_METRICS_PORT": str(free_port())}))
    done = threading.Event()
    streamer = threading.Thread(target=_stream, args=(pg_url, ROWS, done), daemon=True)
    try:
        deadline = time.monotonic() + 60
        while not any(_active_at(log) for log in logs):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.2)
        active = next(i for i, log in enumerate(logs) if _active_at(log))
        standby = 1 - active
        streamer.start()
        settings = Settings(env="test", database_url=pg_url)
        while _count(pg_url) < ROWS // 3:  # mid-stream, the active relay publishing
            time.sleep(0.05)
        killed_at = datetime.now().astimezone()
        os.kill(procs[active].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _active_at(logs[standby]) is None:
            assert time.monotonic() < deadline, logs[standby].read_text()[-3000:]
            time.sleep(0.1)
        took = (_active_at(logs[standby]) - killed_at).total_seconds()  # type: ignore[operator]
        print(f"standby active {took:.2f}s after the kill")
        assert took < 5
        assert done.wait(60)
        deadline = time.monotonic() + 120
        while _unpublished(settings):
            assert time.monotonic() < deadline and procs[standby].poll() is None, \
                logs[standby].read_text()[-3000:]
            time.sleep(0.2)
        got = asyncio.run(_consume(own_broker, ROWS, within=120))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
    samples = [event["sample_id"] for _key, event in got]
    assert len(samples) == ROWS and len(set(samples)) == ROWS  # every row, exactly once
    per_key: dict[str, list[str]] = defaultdict(list)
    for key, event in got:
        per_key[key].append(event["sample_id"])
    assert len(per_key) == len(ZIPS)
    for ordered in per_key.values():
        assert ordered == sorted(ordered)
    text = logs[standby].read_text()
    assert re.search(r"relay: active for ingest_outbox", text)


def _count(url: str) -> int:
    from sqlalchemy import func, select

    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def test_rows_sent_but_not_marked_are_marked_not_sent_again(
    settings: Settings, own_broker: str
) -> None:
    """A relay killed between the broker's acknowledgement and its database update: the
    next active relay finds those rows on the broker (a header names each row) and marks
    them instead of sending them again."""
    settings = settings.model_copy(update={"kafka_bootstrap": own_broker,
                                           "kafka_idempotent_producer": False})
    _submit(settings, 40)

    async def scenario() -> tuple[int, int]:
        producer = make_producer(settings)
        await producer.start()
        try:
            rows = _pending(settings, OutboxMessage)[:25]
            results = await _send(producer, rows, OutboxMessage.__tablename__)
            assert not any(isinstance(r, BaseException) for r in results)
        finally:
            await producer.stop()
        # ... and the relay dies here, before marking them.
        return await reconcile(settings, OutboxMessage), _unpublished(settings)

    marked, left = asyncio.run(scenario())
    assert (marked, left) == (25, 15)
