"""Broker epochs (see `shared.relay`): the marker topic of each outbox table, the epoch in
the database, rows published again when the broker lost them, and the purge of published
rows past the retention."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import Counter
from sqlalchemy import String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow, write_session
from shared.kafka import client_security, ensure_topics, make_producer
from shared.settings import Settings
from shared.topics import ALL_TOPICS

log = logging.getLogger("shared.relay")

REPUBLISHED = Counter("lookout_outbox_republished_total",
                      "Published outbox rows marked for publishing again because the broker "
                      "lost them (its epoch marker was missing)", ["table"])
PURGED = Counter("lookout_outbox_purged_total",
                 "Published outbox rows deleted past the retention", ["table"])
PURGE_CHUNK = 10_000


class RelayEpoch(Base):
    """The broker epoch each outbox table was last published under."""

    __tablename__ = "relay_epochs"

    table_name: Mapped[str] = mapped_column(String(120), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)


def marker_topic(model: Any) -> str:
    return f"relay.{model.__tablename__}.epoch.v1"


def _retention_cutoff(settings: Settings) -> datetime:
    return utcnow() - timedelta(hours=settings.relay_retention_hours)


def _new_epoch(settings: Settings, model: Any, epoch: str) -> int:
    """Record `epoch` for `model`'s table; if an earlier epoch was recorded (the relay had
    published to a broker that has since lost it), mark the rows published within the
    retention unpublished, in the same transaction. Returns how many."""
    table = model.__tablename__
    with write_session(settings.sqlalchemy_url) as session:
        known = session.get(RelayEpoch, table)
        count = 0
        if known is not None:
            result: Any = session.execute(
                update(model).where(model.published_at.is_not(None),
                                    model.published_at >= _retention_cutoff(settings))
                .values(published_at=None))
            count = result.rowcount
            known.epoch, known.started_at = epoch, utcnow()
        else:
            session.add(RelayEpoch(table_name=table, epoch=epoch, started_at=utcnow()))
    return int(count or 0)


def purge_published(settings: Settings, model: Any) -> int:
    """Delete published rows older than the retention (a chunk at a time)."""
    cutoff = _retention_cutoff(settings)
    total = 0
    while True:
        with write_session(settings.sqlalchemy_url) as session:
            ids = session.scalars(select(model.id).where(
                model.published_at.is_not(None), model.published_at < cutoff)
                .order_by(model.id).limit(PURGE_CHUNK)).all()
            if ids:
                session.execute(delete(model).where(model.id.in_(ids)))
        total += len(ids)
        if len(ids) < PURGE_CHUNK:
            break
    if total:
        PURGED.labels(model.__tablename__).inc(total)
    return total


class BrokerWatch:
    """Notices that the broker lost the relay's data (a marker topic missing) and has the
    rows published again (`shared.relay`'s docstring)."""

    def __init__(self, settings: Settings, models: list[Any]) -> None:
        self.settings, self.models = settings, models
        self.admin: AIOKafkaAdminClient | None = None
        self.checked_at = 0.0

    async def close(self) -> None:
        if self.admin is not None:
            admin, self.admin = self.admin, None
            try:
                await admin.close()
            except Exception as exc:  # the broker is away: nothing to close cleanly
                log.debug("admin close failed: %r", exc)

    async def check(self) -> bool:
        """Ask the broker for its topics; recover each table whose marker is missing.
        True when rows were marked for publishing again."""
        if self.admin is None:
            self.admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers,
                                             request_timeout_ms=10000,
                                             **client_security(self.settings))
            await self.admin.start()
        topics = set(await self.admin.list_topics())
        self.checked_at = time.monotonic()
        missing = [m for m in self.models if marker_topic(m) not in topics]
        if not missing:
            return False
        await self._recreate_topics(topics)
        republished = 0
        for model in missing:
            republished += await self._start_epoch(model)
        return republished > 0

    async def _recreate_topics(self, topics: set[str]) -> None:
        """The registered topics, with their partitions. A restarted embedded broker (Tansu)
        creates a topic on the first record sent to it, with its own partition count: such
        a topic is deleted and created again (embedded broker only, where it holds at most
        what was sent since the restart, all of which is sent again)."""
        assert self.admin is not None
        if self.settings.embedded_broker:
            present = [t for t in ALL_TOPICS if t.name in topics]
            wrong = []
            if present:
                for described in await self.admin.describe_topics([t.name for t in present]):
                    topic = next(t for t in present if t.name == described["topic"])
                    if len(described["partitions"]) != topic.partitions:
                        wrong.append(topic.name)
            if wrong:
                log.warning("relay: deleting topics created with the broker's own partition "
                            "count after its restart: %s", ", ".join(wrong))
                await self.admin.delete_topics(wrong)
        await ensure_topics(self.settings.bootstrap_servers, client_security(self.settings),
                            self.settings.kafka_replication_factor)

    async def _start_epoch(self, model: Any) -> int:
        assert self.admin is not None
        epoch = uuid.uuid4().hex
        count = await asyncio.to_thread(_new_epoch, self.settings, model, epoch)
        table = model.__tablename__
        if count:
            REPUBLISHED.labels(table).inc(count)
            log.warning("relay: the broker lost the data of %s (no %s); publishing again the "
                        "%d rows published in the last %.0f h (epoch %s)", table,
                        marker_topic(model), count, self.settings.relay_retention_hours, epoch)
        else:
            log.info("relay: epoch %s for %s", epoch, table)
        try:
            await self.admin.create_topics([NewTopic(marker_topic(model), 1,
                                                     self.settings.kafka_replication_factor)])
        except TopicAlreadyExistsError:
            pass
        producer = make_producer(self.settings)
        await producer.start()
        try:
            await producer.send_and_wait(marker_topic(model), epoch.encode(), key=b"epoch")
        finally:
            await producer.stop()
        return count
