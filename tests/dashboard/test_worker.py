"""`lookout worker dashboard` against a real broker (Tansu): the events land in the read
model, a redelivered story changes nothing, a bad message goes to the DLQ, and
`lookout dashboard rebuild` gives the same tables."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select

from services.dashboard import models
from services.dashboard.consumer import TOPICS
from services.stack import command
from shared.db import Base, session_scope
from shared.faust_patches import fetched_end_offsets
from shared.topics import SIGNALS
from testing.alerts_stack import wait_until
from tests.conftest import REPO_ROOT, free_port, run_lookout
from tests.dashboard.events import story
from tests.dashboard.test_read_model import table_contents

Items = list[tuple[str, bytes, datetime]]
GROUP = "lookout-dashboard"  # the Faust app's id


def _story_items() -> Items:
    return [(topic, event.model_dump_json().encode(), at) for topic, event, at in story()]


async def _produce(bootstrap: str, items: Items) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, value, at in items:
            await producer.send_and_wait(topic, value, key=b"k",
                                         timestamp_ms=int(at.timestamp() * 1000))
    finally:
        await producer.stop()


async def _caught_up(bootstrap: str) -> bool:
    """Whether the worker's group has committed every record of its topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t.name, p) for t in TOPICS for p in range(t.partitions)]
        ends = await fetched_end_offsets(bootstrap, await consumer.end_offsets(tps))
        for tp in tps:
            if ends[tp] and (await consumer.committed(tp) or 0) < ends[tp]:
                return False
        return True
    finally:
        await consumer.stop()


async def _dead_lettered(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return [r.value or b"" for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()


def _count(url: str, model: type[Base]) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def worker_env(db_url: str, own_broker: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {**os.environ, "PYTHONUNBUFFERED": "1", "LOOKOUT_ENV": "test",
           "LOOKOUT_VAR_DIR": str(tmp_path / "var"), "LOOKOUT_DATABASE_URL": db_url,
           "LOOKOUT_KAFKA_BOOTSTRAP": own_broker, "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
           "LOOKOUT_DASHBOARD_WORKER_METRICS_PORT": str(free_port()),
           "LOOKOUT_STREAM_SESSION_TIMEOUT": "4", "LOOKOUT_STREAM_HEARTBEAT_INTERVAL": "1"}


def test_worker_applies_once_dead_letters_and_rebuild_gives_the_same_tables(
    db_url: str, own_broker: str, worker_env: dict[str, str], tmp_path: Path,
) -> None:
    log_path = tmp_path / "dashboard-worker.log"
    items = _story_items()
    bad = (SIGNALS.name, b'{"kind": "spike", "not": "a signal"}', datetime.now(UTC))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command("dashboard-worker"), env=worker_env, cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(_produce(own_broker, [*items, bad]))
            assert wait_until(lambda: asyncio.run(_caught_up(own_broker)), within=120), \
                log_path.read_text(errors="replace")[-3000:]
            before = table_contents(db_url)
            assert len(before["dashboard_alerts"]) == 3
            assert len(before["dashboard_signals"]) == 3  # the bad one is not among them
            assert len(before["dashboard_processed_events"]) == len(items)
            changes = _count(db_url, models.Change)
            # The same records again (a redelivery, e.g. after a crash).
            asyncio.run(_produce(own_broker, items))
            assert wait_until(lambda: asyncio.run(_caught_up(own_broker)), within=60)
            assert table_contents(db_url) == before
            assert _count(db_url, models.Change) == changes
        finally:
            proc.terminate()
            proc.wait(30)
    dead = asyncio.run(_dead_lettered(own_broker, SIGNALS.dlq))
    assert dead == [bad[1]]

    out = run_lookout(worker_env, "dashboard", "rebuild")
    assert "dashboard read model rebuilt" in out and "signals.v1 7" in out  # 3 + 3 + bad
    assert table_contents(db_url) == before
