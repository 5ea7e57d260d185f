"""The Faust consumer's fixes for table recovery after a crash (`shared.streams`): end
offsets that count every record of a partition's last batch on Tansu, and no records of
paused partitions handed over when recovery ends (docs/detection.md)."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP

from shared.faust_patches import _ConsumerThread, fetched_end_offsets

TOPIC = "signals.v1"


async def _end_offsets(bootstrap: str) -> tuple[dict[TopicPartition, int], dict[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    try:
        # three records in one batch to partition 0, one record to partition 1
        sent = [await producer.send(TOPIC, b"v%d" % i, partition=0) for i in range(3)]
        await asyncio.gather(*sent)
        await producer.send_and_wait(TOPIC, b"one", partition=1)
    finally:
        await producer.stop()
    tps = [TopicPartition(TOPIC, p) for p in range(4)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        listed = await consumer.end_offsets(tps)  # Tansu 0.6: 1 for partition 0
    finally:
        await consumer.stop()
    fetched = await fetched_end_offsets(bootstrap, listed)
    return listed, {tp.partition: offset for tp, offset in fetched.items()}


def test_end_offsets_count_every_record_of_the_last_batch(own_broker: str) -> None:
    listed, fetched = asyncio.run(_end_offsets(own_broker))
    assert fetched == {0: 3, 1: 1, 2: 0, 3: 0}
    assert all(fetched[tp.partition] >= offset for tp, offset in listed.items())


class _Fetcher:
    """aiokafka's `Fetcher.fetched_records` rule: the buffered records of the partitions
    asked for, read while it waits, and of every partition when the set is empty."""

    _closed = False

    def __init__(self, buffered: dict[TP, list[str]], on_wait: Any) -> None:
        self.buffered = buffered
        self.on_wait = on_wait
        self._subscriptions = self

    @contextmanager
    def fetch_context(self) -> Any:
        yield

    async def fetched_records(self, partitions: set[TP], timeout: float = 0,  # noqa: ASYNC109
                              max_records: int | None = None) -> dict[TP, list[str]]:
        self.on_wait()  # e.g. recovery ends meanwhile and faust pauses the changelogs
        return {tp: records for tp, records in self.buffered.items()
                if not partitions or tp in partitions}


def test_records_of_paused_partitions_are_not_handed_over_when_the_active_set_empties() -> None:
    changelog, source = TP("t-changelog", 0), TP("source", 0)
    active = {changelog}  # faust's live set: recovery reads the changelog, source is paused
    fetcher = _Fetcher({source: ["prefetched"]}, on_wait=active.clear)
    consumer = type("C", (), {"_fetcher": fetcher, "_closed": False})()
    thread = object.__new__(_ConsumerThread)
    thread.consumer = type("Faust", (), {"flow_active": True})()

    got = asyncio.run(thread._fetch_records(consumer, active, timeout=1))
    assert got == {}  # the source's records stay buffered, its position unmoved
    assert asyncio.run(thread._fetch_records(consumer, set(), timeout=1)) == {}
