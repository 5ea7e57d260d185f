"""Taking over an outbox table: what the previous active relay sent but did not mark."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy import func, select, update

from shared.db import session_scope, utcnow, write_session
from shared.kafka import client_security
from shared.outbox import ROW_HEADER
from shared.settings import Settings

log = logging.getLogger("shared.relay")

RECONCILE_CHUNK = 2_000  # records read back per partition at first when taking over


def _unpublished_since(settings: Settings, model: Any) -> tuple[int | None, list[str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        first = session.scalar(select(func.min(model.id)).where(model.published_at.is_(None)))
        if first is None:
            return None, []
        topics = session.scalars(select(model.topic).where(model.published_at.is_(None))
                                 .distinct()).all()
        return int(first), list(topics)


def _mark(settings: Settings, model: Any, ids: set[int]) -> int:
    if not ids:
        return 0
    with write_session(settings.sqlalchemy_url) as session:
        result: Any = session.execute(
            update(model).where(model.id.in_(ids), model.published_at.is_(None))
            .values(published_at=utcnow()))
        return int(result.rowcount or 0)


async def _rows_on_partition(consumer: Any, tp: TopicPartition, table: str, first: int,
                             begin: int, end: int) -> set[int]:
    """Row ids of `table` found at the tail of a partition: read back in growing chunks
    until a record of a row below `first` (published and marked, so everything the last
    round sent comes after it) or the start of the log."""
    prefix = f"{table}:".encode()
    chunk = RECONCILE_CHUNK
    while True:
        start = max(begin, end - chunk)
        consumer.seek(tp, start)
        ids: list[int] = []
        deadline = time.monotonic() + 30
        while (consumer.highwater(tp) is None
               or await consumer.position(tp) < consumer.highwater(tp)):
            if time.monotonic() > deadline:
                raise KafkaTimeoutError(f"reading back {tp} took more than 30 s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                for name, value in record.headers:
                    if name == ROW_HEADER and value.startswith(prefix):
                        ids.append(int(value[len(prefix):]))
        if start == begin or any(i < first for i in ids):
            return {i for i in ids if i >= first}
        chunk *= 4


async def reconcile(settings: Settings, model: Any) -> int:
    """Mark the unpublished rows of `model` that are already on the broker (sent by a relay
    killed before it marked them), so that no row is published twice. Returns how many."""
    table = model.__tablename__
    first, topics = await asyncio.to_thread(_unpublished_since, settings, model)
    if first is None:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=10,
                                **client_security(settings))
    await consumer.start()
    found: set[int] = set()
    try:
        await consumer.topics()  # fresh metadata
        for topic in topics:
            tps = [TopicPartition(topic, p)
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                continue
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            listed = await consumer.end_offsets(tps)  # Tansu's may stop short: read on
            for tp in tps:
                if listed[tp] > begins[tp]:
                    found |= await _rows_on_partition(consumer, tp, table, first,
                                                      begins[tp], listed[tp])
    finally:
        await consumer.stop()
    marked = await asyncio.to_thread(_mark, settings, model, found)
    if marked:
        log.warning("relay: %d rows of %s were on the broker but not marked published (the "
                    "previous relay stopped in between); marked, not sent again", marked, table)
    return marked
