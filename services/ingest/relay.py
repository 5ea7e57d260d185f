"""The outbox relay: publishes committed outbox rows to Kafka, in order, then marks them.

One relay runs per database. A row is marked published only after the broker acknowledged
it (acks=all), so a crash between the two republishes it: consumers dedupe by event_id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from sqlalchemy import func, select, update

from services.ingest.models import OutboxMessage
from shared.db import session_scope, utcnow
from shared.kafka import make_producer
from shared.settings import Settings

log = logging.getLogger(__name__)

PUBLISHED = Counter("lookout_ingest_outbox_published_total", "Outbox rows published", ["topic"])
PUBLISH_ERRORS = Counter("lookout_ingest_outbox_errors_total", "Failed publish attempts")
LAG_ROWS = Gauge("lookout_ingest_outbox_lag_rows", "Outbox rows not yet published")
LAG_SECONDS = Gauge("lookout_ingest_outbox_lag_seconds", "Age of the oldest unpublished row")


def _pending(settings: Settings) -> list[tuple[int, str, str, str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.execute(
            select(OutboxMessage.id, OutboxMessage.topic, OutboxMessage.key,
                   OutboxMessage.payload)
            .where(OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.id)
            .limit(settings.relay_batch_size)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def _mark_published(settings: Settings, ids: list[int]) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(published_at=utcnow())
        )


def _measure_lag(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        count, oldest = session.execute(
            select(func.count(), func.min(OutboxMessage.created_at))
            .where(OutboxMessage.published_at.is_(None))
        ).one()
    LAG_ROWS.set(count)
    # min() keeps the column's type, so `oldest` comes back timezone-aware.
    LAG_SECONDS.set(0 if oldest is None else max((utcnow() - oldest).total_seconds(), 0))


async def publish_pending(settings: Settings, producer: object) -> int:
    """Publish one batch; return how many rows were published."""
    rows = await asyncio.to_thread(_pending, settings)
    if not rows:
        return 0
    futures = [
        await producer.send(topic, value=payload.encode(), key=key.encode())  # type: ignore[attr-defined]
        for _id, topic, key, payload in rows
    ]
    await asyncio.gather(*futures)
    await asyncio.to_thread(_mark_published, settings, [r[0] for r in rows])
    for _id, topic, _key, _payload in rows:
        PUBLISHED.labels(topic).inc()
    return len(rows)


async def run_relay(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Relay forever (or until `stop`), backing off with jitter while the broker is away."""
    stop = stop or asyncio.Event()
    backoff = 0.2
    producer = None
    last_lag = 0.0
    while not stop.is_set():
        try:
            if producer is None:
                producer = make_producer(settings)
                await producer.start()
                log.info("relay connected to %s", settings.bootstrap_servers)
            published = await publish_pending(settings, producer)
            backoff = 0.2
            if time.monotonic() - last_lag > 1:
                await asyncio.to_thread(_measure_lag, settings)
                last_lag = time.monotonic()
            if not published:
                await _sleep_or_stop(stop, settings.relay_poll_interval)
        except (KafkaError, OSError) as exc:
            PUBLISH_ERRORS.inc()
            log.warning("relay: broker unavailable (%r); retrying in %.1fs", exc, backoff)
            if producer is not None:
                await _close_quietly(producer)
                producer = None
            await _sleep_or_stop(stop, backoff * (1 + random.random() / 2))
            backoff = min(backoff * 2, 10.0)
    if producer is not None:
        await producer.stop()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _close_quietly(producer: object) -> None:
    try:
        await producer.stop()  # type: ignore[attr-defined]
    except Exception as exc:
        log.debug("producer close failed: %r", exc)
