"""The dashboard worker (`lookout worker dashboard`): signals, results, reports, referrals'
and alerts' events (and the sites' names from `sites.keys.v1`) into the dashboard's own
tables (`services.dashboard.consumer`), a batch per transaction.

A record that does not parse goes to its topic's dead-letter topic at once; a batch that
fails is applied again one record at a time, and a record that keeps failing is
dead-lettered, so one bad message never stops the worker. Old rows of the change log (the
live stream's) are pruned by a timer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, func, select

from services.dashboard import consumer, models
from shared.db import session_scope, utcnow
from shared.metrics import AGENT_MESSAGES
from shared.settings import get_settings
from shared.streams import dead_letter, handle_with_retries, make_faust_app

log = logging.getLogger(__name__)
settings = get_settings()
app = make_faust_app("dashboard", settings)

BATCH = 500  # records per transaction at most
BATCH_WITHIN = 0.02  # seconds a batch waits to fill (the live stream's latency budget)
CHANGES_KEPT = timedelta(hours=24)

source_topics = app.topic(*(t.name for t in consumer.TOPICS), value_serializer="raw",
                          key_serializer="raw")
dead_letters = {t.name: app.topic(t.dlq, value_serializer="raw", key_serializer="raw",
                                  partitions=t.partitions) for t in consumer.TOPICS}


def _record(event: Any) -> consumer.Record:
    message = event.message
    raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    timestamp = message.timestamp  # seconds (faust divides Kafka's milliseconds)
    return consumer.Record(message.topic, raw,
                           consumer.record_time(int(timestamp * 1000) if timestamp else None))


async def handle_events(events: list[Any]) -> None:
    batch: list[tuple[consumer.Record, BaseModel]] = []
    messages: list[Any] = []
    for event in events:
        record = _record(event)
        try:
            batch.append((record, consumer.parse(record.topic, record.value)))
            messages.append(event.message)
        except (ValidationError, ValueError) as exc:
            await dead_letter(dead_letters[record.topic], event.message, record.value,
                              f"undecodable: {exc}", "dashboard", "read_model")
    if not batch:
        return
    try:
        await asyncio.to_thread(consumer.apply_batch, settings.sqlalchemy_url, batch)
        AGENT_MESSAGES.labels("dashboard", "read_model", "ok").inc(len(batch))
        return
    except Exception as exc:
        log.warning("read_model: a batch of %d failed (%r); one at a time", len(batch), exc)
    for item, message in zip(batch, messages, strict=True):
        await _apply_one(item, message)


async def _apply_one(item: tuple[consumer.Record, BaseModel], message: Any) -> None:
    """One record in its own transaction: retried, then dead-lettered
    (`shared.streams.handle_with_retries`)."""
    record = item[0]
    await handle_with_retries(message, record.value, item, service="dashboard",
                              agent="read_model", handle=_apply, dlq=dead_letters[record.topic])


async def _apply(item: tuple[consumer.Record, BaseModel]) -> None:
    await asyncio.to_thread(consumer.apply_batch, settings.sqlalchemy_url, [item])


@app.agent(source_topics, concurrency=1)
async def read_model(stream: Any) -> None:
    async for events in stream.take_events(BATCH, within=BATCH_WITHIN):
        await handle_events(list(events))


def _prune() -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        # The newest row always stays: on SQLite ids restart after the largest one left,
        # and open streams go on from the last id they saw.
        newest = select(func.max(models.Change.id)).scalar_subquery()
        result = session.execute(delete(models.Change).where(
            models.Change.at < utcnow() - CHANGES_KEPT, models.Change.id < newest))
        return int(getattr(result, "rowcount", 0) or 0)


@app.timer(600.0)
async def prune_changes() -> None:
    try:
        await asyncio.to_thread(_prune)
    except Exception:
        log.exception("pruning the change log failed; again on the next tick")
