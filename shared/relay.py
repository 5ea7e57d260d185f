"""The outbox relay (`lookout relay`): publishes every service's outbox table to Kafka
(`shared.outbox`), and keeps the database the source of truth when the broker loses data.

Broker epochs. The embedded broker keeps everything in memory: restarted, it has no
topics, changelogs or DLQs, while the outbox rows are marked published. For each outbox
table the relay keeps a marker topic on the broker (`relay.<table>.epoch.v1`, one record:
the epoch id) and the epoch in the database (`relay_epochs`). Before each round that has
rows to send, and every second when idle, it asks the broker for its topic list: a marker
missing means the broker lost what was published, so the relay creates the registered
topics again and marks every row published within `LOOKOUT_RELAY_RETENTION_HOURS`
unpublished in one transaction with the new epoch, then writes the new marker; those rows
go out again in id order, so per-key order holds. Published rows older than the retention
are deleted. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import random
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from prometheus_client import Counter
from sqlalchemy import String, delete, func, make_url, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, get_engine, session_scope, utcnow, write_session
from shared.kafka import client_security, ensure_topics, make_producer
from shared.outbox import PUBLISH_ERRORS, ROW_HEADER, measure_lag, publish_pending
from shared.settings import Settings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)

REPUBLISHED = Counter("lookout_outbox_republished_total",
                      "Published outbox rows marked for publishing again because the broker "
                      "lost them (its epoch marker was missing)", ["table"])
PURGED = Counter("lookout_outbox_purged_total",
                 "Published outbox rows deleted past the retention", ["table"])
BROKER_CHECK_INTERVAL = 1.0  # s, when idle (and before every round that sends)
PURGE_INTERVAL = 60.0  # s
PURGE_CHUNK = 10_000
RECONCILE_CHUNK = 2_000  # records read back per partition at first when taking over


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
    rows published again (module docstring)."""

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


# -- one active relay per outbox table ------------------------------------------------------


def _lock_key(table: str) -> int:
    """The PostgreSQL advisory lock key of an outbox table (a signed 64-bit int)."""
    return int.from_bytes(hashlib.sha256(f"lookout.relay:{table}".encode()).digest()[:8],
                          "big", signed=True)


class TableLease:
    """The right to publish one outbox table: on PostgreSQL a session advisory lock, held by
    a connection of its own (released by the server when the holder dies: a `kill -9` of
    the active relay frees it at once); on SQLite an flock(2) on a file beside the database
    (one machine). Several relays may run; for each table one is active, the others stand
    by and try again every `LOOKOUT_RELAY_STANDBY_POLL_SECONDS`."""

    def __init__(self, settings: Settings, table: str) -> None:
        self.url, self.table = settings.sqlalchemy_url, table
        self._conn: Any = None
        self._file: Any = None

    def acquire(self) -> bool:
        if self.url.startswith("sqlite"):
            database = make_url(self.url).database
            if not database or database == ":memory:":
                return True
            file = open(f"{database}.relay-{self.table}.lock", "a")
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                return False
            self._file = file
            return True
        conn = get_engine(self.url).connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"),
                                   {"k": _lock_key(self.table)}))
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """Still ours (the lock's connection answers)."""
        if self._conn is None:
            return True
        try:
            self._conn.scalar(text("SELECT 1"))
            return True
        except Exception as exc:
            log.warning("relay: lost the lease of %s (%r)", self.table, exc)
            self.release()
            return False

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:
                log.debug("lease connection close failed: %r", exc)
        if self._file is not None:
            self._file.close()
            self._file = None


# -- taking over: what the previous active relay sent but did not mark ----------------------


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


async def run_relay(settings: Settings, models: list[Any],
                    stop: asyncio.Event | None = None) -> None:
    """Relay the given outbox tables until `stop`, backing off while the broker is away.
    Several relays may run: each table is published by the one holding its lease, the
    others stand by (`TableLease`); a relay taking a table over first marks what the
    previous one sent but did not mark (`reconcile`)."""
    stop = stop or asyncio.Event()
    backoff = 0.2
    producer = None
    leases = {m: TableLease(settings, m.__tablename__) for m in models}
    active: list[Any] = []
    unreconciled: set[Any] = set()
    watch = BrokerWatch(settings, active)
    last_lease = last_lag = last_purge = 0.0
    failures = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if len(active) < len(models) and (
                    not active or now - last_lease > settings.relay_standby_poll_seconds):
                for model in models:
                    if model not in active and await asyncio.to_thread(leases[model].acquire):
                        log.info("relay: active for %s", model.__tablename__)
                        active.append(model)
                        unreconciled.add(model)
                last_lease = now
            if not active:
                await _sleep_or_stop(stop, settings.relay_standby_poll_seconds)
                continue
            try:
                if producer is None:
                    await watch.check()
                    producer = make_producer(settings)
                    await producer.start()
                    log.info("relay connected to %s", settings.bootstrap_servers)
                for model in list(unreconciled):
                    await reconcile(settings, model)
                    unreconciled.discard(model)
                more = False
                for model in active:
                    published = await publish_pending(settings, producer, model, watch.check)
                    more = more or published >= settings.relay_batch_size
                backoff, failures = 0.2, 0
                now = time.monotonic()
                if now - watch.checked_at > BROKER_CHECK_INTERVAL:
                    await watch.check()
                if now - last_lag > 1:
                    for model in list(active):
                        if not await asyncio.to_thread(leases[model].held):
                            active.remove(model)
                            continue
                        await asyncio.to_thread(measure_lag, settings, model)
                    last_lag = now
                if now - last_purge > PURGE_INTERVAL:
                    for model in active:
                        await asyncio.to_thread(purge_published, settings, model)
                    last_purge = now
                if not more:
                    # Only a full batch means more is waiting. Going round again at once
                    # after a partial one made a steady trickle of single results cost a
                    # query, a send, a wait for the acks and a write per handful of rows
                    # (docs/performance.md); waiting for the next poll lets rows gather.
                    await _sleep_or_stop(stop, settings.relay_poll_interval)
            except (KafkaError, OSError) as exc:
                PUBLISH_ERRORS.inc()
                failures += 1
                # One line per outage step, not one per retry: retries double up to 10 s.
                if failures == 1 or backoff >= 10.0:
                    log.warning("relay: broker unavailable (%r); retrying with backoff "
                                "(%d failures in a row)", exc, failures)
                if producer is not None:
                    await _close_quietly(producer)
                    producer = None
                await watch.close()
                unreconciled.update(active)  # what the failed round sent may be there
                await _sleep_or_stop(stop, backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, 10.0)
    finally:
        if producer is not None:
            await _close_quietly(producer)
        await watch.close()
        for lease in leases.values():
            lease.release()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _close_quietly(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception as exc:
        log.debug("producer close failed: %r", exc)

