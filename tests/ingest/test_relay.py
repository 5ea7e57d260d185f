"""The outbox relay against a real broker and real databases: published once, in order per
key, and nothing lost while the broker is away."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import func, select, update

from services.ingest.models import OutboxMessage
from services.ingest.schemas import DrugCheckIn
from services.ingest.service.common import Caller
from services.ingest.service.drug_checks import submit_drug_check
from services.ingest.service.sites import create_site
from shared.broker import start_tansu
from shared.db import session_scope, utcnow
from shared.kafka import ensure_topics, wait_for_broker
from shared.outbox import publish_pending
from shared.relay import run_relay
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS, SITE_KEYS
from testing.builders import drug_check
from tests.conftest import free_port

ZIPS = ["98104", "98101", "10001"]


def _submit(settings: Settings, count: int) -> list[str]:
    with session_scope(settings.sqlalchemy_url) as session:
        site, _ = create_site(session, "relay test", ["results"])
        # The site's key announcement (sites.keys.v1) went out before: these tests relay
        # results.
        session.execute(update(OutboxMessage).where(OutboxMessage.topic == SITE_KEYS.name)
                        .values(published_at=utcnow()))
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


def _unpublished(settings: Settings, topic: str = DRUGCHECK_RESULTS.name) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.published_at.is_(None),
                                         OutboxMessage.topic == topic)) or 0)


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


class _FakeBatch:
    """A record batch of the fake producer: room for two messages (so that the relay has to
    submit full batches and open new ones)."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: float | None,
               headers: list[tuple[str, bytes]]) -> object | None:
        if len(self.messages) == 2:
            return None
        self.messages.append((key, value))
        return object()


class _FlakyProducer:
    """aiokafka's batch API over 4 partitions: acknowledges every batch but those holding a
    key in `fail_keys` (in this test, 98101 is alone on its partition)."""

    def __init__(self, fail_keys: set[str]) -> None:
        self.fail_keys = fail_keys
        self.sent: list[tuple[str, str]] = []
        self.batches: dict[int, list[list[str]]] = defaultdict(list)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def create_batch(self) -> _FakeBatch:
        return _FakeBatch()

    async def send_batch(self, batch: _FakeBatch, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        samples = [json.loads(value)["sample_id"] for _key, value in batch.messages]
        self.batches[partition].append(samples)
        if any(key.decode() in self.fail_keys for key, _value in batch.messages):
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent += [(key.decode(), sample) for (key, _v), sample
                          in zip(batch.messages, samples, strict=True)]
            future.set_result(None)
        return future


def test_a_batch_that_fails_in_part_marks_what_was_acknowledged_and_keeps_key_order(
    settings: Settings,
) -> None:
    _submit(settings, 6)  # keys alternate over ZIPS: r-0, r-3 share a key, and so on
    flaky = _FlakyProducer({"us/wa/king-county/98101"})  # the key of r-1 and r-4
    with pytest.raises(KafkaTimeoutError):
        asyncio.run(publish_pending(settings, flaky, OutboxMessage))
    assert sorted(s for _k, s in flaky.sent) == ["r-0", "r-2", "r-3", "r-5"]
    # each partition's rows in id order, in batches of at most two (full ones submitted)
    assert sorted(flaky.batches.values()) == [[["r-0", "r-2"], ["r-3", "r-5"]],
                                              [["r-1", "r-4"]]]
    assert _unpublished(settings) == 2  # only r-1 and r-4: nothing acknowledged is re-sent
    good = _FlakyProducer(set())
    assert asyncio.run(publish_pending(settings, good, OutboxMessage)) == 2
    assert [s for _k, s in good.sent] == ["r-1", "r-4"]  # in order within the key
    assert _unpublished(settings) == 0
