"""SQLAlchemy base, engine and session scope shared by every service.

Each service owns its tables, named with its prefix (`ingest_`, `alerts_`, `referrals_`).
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@cache
def get_engine(url: str) -> Engine:
    """One engine per database URL and process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                               json_serializer=_json_serializer)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               json_serializer=_json_serializer)
    return engine


@cache
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work: commits when the block ends, rolls back if it raises."""
    session = get_sessionmaker(url)()
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
