"""SQLAlchemy base, engine and session scope shared by every service.

Each service owns its tables, named with its prefix (`ingest_`, `alerts_`, `referrals_`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, DateTime, MetaData, Table, create_engine, event, text
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: times are stored in UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RawJSON(str):
    """Text that is JSON already (e.g. a pydantic model's `model_dump_json()`): a JSON column
    stores it as it is, instead of parsing it into a dict only to serialize it again."""


def _json_serializer(value: Any) -> str:
    return value if isinstance(value, RawJSON) else json.dumps(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes of WAL kept after it is reset (SQLite truncates)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # synchronous=FULL in WAL mode: a commit is fsynced to the WAL before it returns, so what
    # a service answered as accepted (ingest's 202) survives a power cut or an operating-
    # system crash, not only the process being killed. It costs one fsync per commit
    # (docs/performance.md); the hot writers commit groups, so it is paid once per group,
    # not per request. NORMAL would fsync only at checkpoints.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=FULL")
    # The WAL file is reused from its start after each complete checkpoint, but never shrinks
    # by itself: a burst of writes (docs/performance.md) would stay on disk for good.
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_writer_pragmas(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    # No checkpoint inside this connection's commits (SQLite's default runs one, with its
    # fsyncs, in the commit that takes the WAL past 1,000 pages: inside the write lock);
    # `checkpoint_soon` runs it after the lock is let go.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def get_engine(url: str, writer: bool = False) -> Engine:
    """One engine per database URL and process; `writer`: the hot writers' engine (see
    `write_session`), which on SQLite leaves WAL checkpoints to `checkpoint_soon` (on
    other databases, the same engine)."""
    return _engine(url, writer and url.startswith("sqlite"))


@cache
def _engine(url: str, writer: bool) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                               json_serializer=_json_serializer)
        event.listen(engine, "connect", _sqlite_writer_pragmas if writer else _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               json_serializer=_json_serializer)
    return engine


def get_sessionmaker(url: str, writer: bool = False) -> sessionmaker[Session]:
    return _sessionmaker(url, writer and url.startswith("sqlite"))


@cache
def _sessionmaker(url: str, writer: bool) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url, writer), expire_on_commit=False)


class BulkInsert:
    """An INSERT of many rows whose values are turned into the driver's parameters ahead of
    the write, by SQLAlchemy's own bind processors for the database (UUIDs, UTC times,
    JSON), and then executed as one `executemany` without SQLAlchemy's per-row work.

    Why: under a single writer (SQLite) the write lock is held while rows are inserted;
    SQLAlchemy's Core `executemany` spent about three times as long in Python per row of
    the ingest tables (parameter processing and bookkeeping) as SQLite itself took
    (docs/performance.md). `row()` runs before the write; `execute()` inside it.

    `late` columns take one value for every row of an `execute()` (e.g. `received_at`, set
    inside the write lock so that the times follow the commits)."""

    def __init__(self, dialect: Dialect, table: Table, columns: Sequence[str],
                 late: Sequence[str] = ()) -> None:
        names = [*columns, *late]
        quote = dialect.identifier_preparer.quote
        style = dialect.paramstyle
        self.positional = style in ("qmark", "format", "numeric")
        marks = {"qmark": ["?"] * len(names), "format": ["%s"] * len(names),
                 "numeric": [f":{i + 1}" for i in range(len(names))],
                 "named": [f":{n}" for n in names],
                 "pyformat": [f"%({n})s" for n in names]}[style]
        columns_sql = ", ".join(quote(n) for n in names)  # our own table's names, quoted
        self.sql = (f"INSERT INTO {quote(table.name)} ({columns_sql}) "  # noqa: S608
                    f"VALUES ({', '.join(marks)})")

        def processor(name: str) -> Any:
            return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)

        self._columns = [(n, processor(n)) for n in columns]
        self._late = [(n, processor(n)) for n in late]

    def _values(self, pairs: list[tuple[str, Any]], values: Mapping[str, Any]) -> Any:
        out = [values[n] if p is None else p(values[n]) for n, p in pairs]
        return tuple(out) if self.positional else dict(zip([n for n, _ in pairs], out,
                                                           strict=True))

    def row(self, values: Mapping[str, Any]) -> Any:
        """One row's parameters (every column but the late ones), ready for the driver."""
        return self._values(self._columns, values)

    def execute(self, connection: Connection, rows: Sequence[Any], **late: Any) -> None:
        """Insert `rows` (from `row()`) in order, with the late columns' values."""
        tail = self._values(self._late, late)
        if self.positional:
            params: list[Any] = [row + tail for row in rows]
        else:
            params = [{**row, **tail} for row in rows]
        connection.exec_driver_sql(self.sql, params)


@cache
def bulk_insert(dialect: Dialect, table: Table, columns: tuple[str, ...],
                late: tuple[str, ...] = ()) -> BulkInsert:
    """The `BulkInsert` of these columns of `table` for a database's dialect (an engine's
    `dialect`: one per database URL and process)."""
    return BulkInsert(dialect, table, columns, late)


@contextmanager
def session_scope(url: str, writer: bool = False) -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back if it raises (`writer`: on
    the hot writers' engine, see `write_session`)."""
    session = get_sessionmaker(url, writer=writer)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# SQLite has a single writer. Its busy handler makes a waiting writer sleep, 1 ms at first
# and up to 100 ms per try, so writers that wait for each other there lose tens of ms, and
# a writer that keeps losing (the outbox relay against ingest's group writer) can starve
# for seconds. Our hot writers (ingest's group writer and CSV import, the outbox relay)
# queue on a lock instead and get SQLite's write lock the moment the previous one lets go:
# a thread lock within the process, and an flock(2) on a file beside the database between
# processes.
_THREAD_LOCK = threading.Lock()


@contextmanager
def _sqlite_write_lock(url: str) -> Iterator[None]:
    database = make_url(url).database
    with _THREAD_LOCK:
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.write.lock", "a") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file is closed
            yield


def write_lock(url: str) -> AbstractContextManager[Any]:
    """Hold around a write transaction: on SQLite, one such writer at a time across all
    processes, queued in order; elsewhere nothing (the database copes)."""
    return _sqlite_write_lock(url) if url.startswith("sqlite") else nullcontext()


@contextmanager
def write_session(url: str) -> Iterator[Session]:
    """A unit of work of a hot writer (ingest's group writer and CSV import, the outbox
    relay): committed when the block ends (rolled back if it raises) under `write_lock`,
    on the writer engine; then, outside the lock, `checkpoint_soon`."""
    with write_lock(url), session_scope(url, writer=True) as session:
        yield session
    checkpoint_soon(url)


# WAL checkpoints of the hot writers: on a thread of their own, one per CHECKPOINT_INTERVAL
# at most per process, PASSIVE (never waits for readers or writers: the writers go on
# appending to the WAL while the pages are copied and fsynced). Every commit is followed by
# a checkpoint that starts after it, within CHECKPOINT_INTERVAL, so the WAL does not grow
# without bound and readers find the pages in the database file. A checkpoint cut short by
# readers is finished by a later one; the WAL starts over once one completes.
CHECKPOINT_INTERVAL = 0.5
_checkpointer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
_checkpoint_guard = threading.Lock()
_checkpoint_due: dict[str, float] = {}
_checkpoint_scheduled: set[str] = set()


def checkpoint_soon(url: str) -> None:
    """After a hot writer's commit, outside the write lock: have the WAL of the SQLite
    database at `url` checkpointed on the checkpoint thread, as soon as CHECKPOINT_INTERVAL
    has passed since the last one (at once if it has). Nothing on other databases."""
    if not url.startswith("sqlite"):
        return
    with _checkpoint_guard:
        if url in _checkpoint_scheduled:  # one that has not started yet covers this commit
            return
        _checkpoint_scheduled.add(url)
    _checkpointer.submit(_checkpoint, url)


def _checkpoint(url: str) -> None:
    with _checkpoint_guard:
        wait = _checkpoint_due.get(url, 0.0) - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    with _checkpoint_guard:  # from here on, a new commit schedules the next one
        _checkpoint_scheduled.discard(url)
        _checkpoint_due[url] = time.monotonic() + CHECKPOINT_INTERVAL
    try:
        with get_engine(url, writer=True).connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception as exc:  # the next one will do it
        log.warning("WAL checkpoint failed: %r", exc)


def try_job_lock(session: Session, job: str) -> bool:
    """Whether this transaction may do `job`, a timer's work that every instance of a worker
    schedules (expiry, follow-ups, purge): on PostgreSQL a transaction-scoped advisory lock,
    one holder at a time, let go at commit or rollback, so the other instances skip this
    round. SQLite has one writer at a time: a second transaction that read before the first
    committed cannot write (SQLITE_BUSY_SNAPSHOT) and rolls back, so True there."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    digest = hashlib.blake2b(f"lookout.job.{job}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))
