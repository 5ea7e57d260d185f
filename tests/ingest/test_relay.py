"""The outbox relay against a real broker and real databases: published once, in order per
key, and nothing lost while the broker is away."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select

from services.ingest.models import OutboxMessage
from services.ingest.schemas import DrugCheckIn
from services.ingest.service import Caller, create_site, submit_drug_check
from shared.broker import start_tansu
from shared.db import session_scope
from shared.kafka import ensure_topics, wait_for_broker
from shared.outbox import run_relay
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS
from tests.builders import drug_check
from tests.conftest import free_port

ZIPS = ["98104", "98101", "10001"]


def _submit(settings: Settings, count: int) -> list[str]:
    with session_scope(settings.sqlalchemy_url) as session:
        site, _ = create_site(session, "relay test", ["results"])
        caller = Caller(site.id, ("results",))
        ids = []
        for i in range(count):
            body = DrugCheckIn.model_validate(
                drug_check(f"r-{i}", location={"postal_code": ZIPS[i % len(ZIPS)]}))
            row, created = submit_drug_check(session, caller, body)
            assert created
            ids.append(str(row.event_id))
        return ids


async def _consume(bootstrap: str, expected: int, within: float = 20) -> list[tuple[str, dict]]:
    consumer = AIOKafkaConsumer(DRUGCHECK_RESULTS.name, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[str, dict]] = []
    try:
        async with asyncio.timeout(within):
            while len(got) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got += [(r.key.decode(), json.loads(r.value)) for r in records]
        # and nothing more arrives
        extra = await consumer.getmany(timeout_ms=1000)
        got += [(r.key.decode(), json.loads(r.value)) for rs in extra.values() for r in rs]
    finally:
        await consumer.stop()
    return got


def _unpublished(settings: Settings) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.published_at.is_(None))) or 0)


def test_every_accepted_result_reaches_the_topic_once_even_after_an_outage(
    settings: Settings,
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    relay_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap,
                                                 "kafka_idempotent_producer": False})
    sent = _submit(relay_settings, 60)

    async def scenario() -> list[tuple[str, dict]]:
        stop = asyncio.Event()
        relay = asyncio.create_task(run_relay(relay_settings, [OutboxMessage], stop))
        await asyncio.sleep(2)  # the broker is down: the relay must wait, not drop
        assert _unpublished(relay_settings) == 60
        assert not relay.done()
        broker = start_tansu("127.0.0.1", port)
        try:
            await wait_for_broker(bootstrap, 30)
            await ensure_topics(bootstrap)
            for _ in range(300):
                if _unpublished(relay_settings) == 0:
                    break
                await asyncio.sleep(0.1)
            got = await _consume(bootstrap, 60)
        finally:
            stop.set()
            await asyncio.wait_for(relay, 15)
            broker.terminate()
            broker.wait(10)
        return got

    got = asyncio.run(scenario())
    assert _unpublished(relay_settings) == 0
    event_ids = [event["event_id"] for _key, event in got]
    assert sorted(event_ids) == sorted(sent)  # all of them, each exactly once
    per_key: dict[str, list[str]] = defaultdict(list)
    for key, event in got:
        assert key == event["region_id"]
        per_key[key].append(event["sample_id"])
    for samples in per_key.values():  # in submission order within each key
        assert samples == sorted(samples, key=lambda s: int(s.split("-")[1]))
