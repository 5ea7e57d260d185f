"""The transactional outbox, shared by every service that publishes events.

A service defines its own outbox table (`class OutboxMessage(OutboxMixin, Base)` with its
prefix), adds a row in the same transaction as the change it announces (`outbox_row`), and
registers the table in `OUTBOX_TABLES`. The relay (`lookout relay`, `shared.relay`)
publishes committed rows in id order with acks=all and marks them; a crash between the two
republishes a row, and consumers dedupe by event_id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from sqlalchemy import BigInteger, Index, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import UTCDateTime, session_scope, utcnow, write_session
from shared.kafka import CachedPartitioner
from shared.settings import Settings
from shared.topics import Topic

log = logging.getLogger(__name__)

PUBLISHED = Counter("lookout_outbox_published_total", "Outbox rows published",
                    ["table", "topic"])
PUBLISH_ERRORS = Counter("lookout_outbox_errors_total", "Failed publish attempts")
LAG_ROWS = Gauge("lookout_outbox_lag_rows", "Outbox rows not yet published", ["table"])
LAG_SECONDS = Gauge("lookout_outbox_lag_seconds", "Age of the oldest unpublished row",
                    ["table"])


class OutboxMixin:
    """Columns of an outbox table; the concrete class names the table."""

    __tablename__: str

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    topic: Mapped[str] = mapped_column(String(120))
    key: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index(f"ix_{cls.__tablename__}_unpublished", "published_at", "id"),)


def outbox_row(model: type[OutboxMixin], topic: Topic, key: str, event: BaseModel) -> Any:
    """A new outbox row for `event` on `topic`; add it to the session of the change."""
    return model(topic=topic.name, key=key, payload=event.model_dump_json(),  # type: ignore[call-arg]
                 created_at=utcnow())


def _pending(settings: Settings, model: Any) -> list[tuple[int, str, str, str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(
            select(model.id, model.topic, model.key, model.payload)
            .where(model.published_at.is_(None))
            .order_by(model.id)
            .limit(settings.relay_batch_size)
        ).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]


def _mark_published(settings: Settings, model: Any, ids: list[int]) -> None:
    url = settings.sqlalchemy_url
    with write_session(url) as session:
        session.execute(update(model).where(model.id.in_(ids)).values(published_at=utcnow()))


def measure_lag(settings: Settings, model: Any) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        count, oldest = session.execute(
            select(func.count(), func.min(model.created_at)).where(model.published_at.is_(None))
        ).one()
    table = model.__tablename__
    LAG_ROWS.labels(table).set(count)
    # min() keeps the column's type, so `oldest` comes back timezone-aware.
    LAG_SECONDS.labels(table).set(
        0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0))


async def publish_pending(settings: Settings, producer: Any, model: Any,
                          check: Callable[[], Awaitable[bool]] | None = None) -> int:
    """Publish one batch of one outbox table; return how many rows were published.
    `check` runs before rows are sent (the relay's broker check, `shared.relay`): when it
    returns True, rows were marked unpublished again and the batch is selected anew."""
    rows = await asyncio.to_thread(_pending, settings, model)
    if not rows:
        return 0
    if check is not None and await check():
        rows = await asyncio.to_thread(_pending, settings, model)
    results = await _send(producer, rows, model.__tablename__)
    # Mark what the broker acknowledged even if part of the batch failed (the broker going
    # away mid-batch), so those rows are not published twice; per key only up to its first
    # failure, so that the retry keeps the order per key.
    failed: set[tuple[str, str]] = set()
    done: list[tuple[int, str]] = []
    for (row_id, topic, key, _payload), result in zip(rows, results, strict=True):
        if isinstance(result, BaseException) or (topic, key) in failed:
            failed.add((topic, key))
        else:
            done.append((row_id, topic))
    if done:
        await asyncio.to_thread(_mark_published, settings, model, [d[0] for d in done])
    for _id, topic in done:
        PUBLISHED.labels(model.__tablename__, topic).inc()
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is not None:
        raise error
    return len(rows)


_partitioner = CachedPartitioner()  # the producers' own (murmur2): the same partitions


ROW_HEADER = "lookout-outbox"  # each record's "<table>:<row id>" (shared.relay.reconcile)


def row_header(table: str, row_id: int) -> tuple[str, bytes]:
    return (ROW_HEADER, f"{table}:{row_id}".encode())


async def _send(producer: Any, rows: list[tuple[int, str, str, str]],
                table: str) -> list[Any]:
    """Send rows in order as record batches, one open batch per partition (aiokafka sends a
    partition's batches one after the other, so each key's order holds); each row's outcome:
    its batch's result, or the exception that failed its batch. Each record names its row
    in a header, so that a relay taking over finds what was sent but not marked.

    Why batches: `send()` per message costs about twice the CPU of a record appended to a
    batch (a future, the accumulator's bookkeeping and its partitioner per message;
    docs/performance.md)."""
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
    sent: list[tuple[asyncio.Future[Any], list[int]]] = []

    async def submit(topic: str, partition: int) -> None:
        batch, members = open_batches.pop((topic, partition))
        sent.append((await producer.send_batch(batch, topic, partition=partition), members))

    for index, (_id, topic, key, payload) in enumerate(rows):
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        key_bytes, value = key.encode(), payload.encode()
        headers = [row_header(table, _id)]
        partition = _partitioner(key_bytes, partitions[topic], partitions[topic])
        if (topic, partition) not in open_batches:
            open_batches[topic, partition] = (producer.create_batch(), [])
        batch, members = open_batches[topic, partition]
        if batch.append(key=key_bytes, value=value, timestamp=None,
                        headers=headers) is None:  # full
            await submit(topic, partition)
            batch, members = open_batches[topic, partition] = (producer.create_batch(), [])
            if batch.append(key=key_bytes, value=value, timestamp=None,
                            headers=headers) is None:
                raise MessageSizeTooLargeError(f"outbox row {_id} does not fit in a batch")
        members.append(index)
    for topic, partition in list(open_batches):
        await submit(topic, partition)
    results: list[Any] = [None] * len(rows)
    outcomes = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
    for (_future, members), outcome in zip(sent, outcomes, strict=True):
        for index in members:
            results[index] = outcome
    return results

