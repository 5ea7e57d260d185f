"""The hot writers' SQLite plumbing in shared.db: WAL checkpoints after the write lock, and
bulk inserts with parameters made before the write."""

from __future__ import annotations

import shutil
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, Uuid, select, text

from shared import db
from shared.db import UTCDateTime, bulk_insert, get_engine, write_session
from shared.ids import uuid7


def _rows_in_main_file(database: Path, tmp_path: Path) -> int:
    """Rows of `t` in the database file alone, without its WAL: what checkpoints wrote."""
    copy = tmp_path / f"copy-{uuid.uuid4().hex}.db"
    shutil.copyfile(database, copy)
    connection = sqlite3.connect(copy)
    try:
        return int(connection.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself is still only in the WAL
        return 0
    finally:
        connection.close()


def test_every_hot_write_reaches_the_database_file_soon_after(tmp_path: Path) -> None:
    database = tmp_path / "w.db"
    url = f"sqlite:///{database}"
    with get_engine(url).begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with get_engine(url, writer=True).connect() as connection:  # no checkpoint in commits
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    # Three commits in a row: the first one's checkpoint may run before the others commit;
    # the later ones must still be followed by one (within the interval), not be left in
    # the WAL until some later write.
    for i in range(3):
        with write_session(url) as session:
            session.execute(text("INSERT INTO t VALUES (:x)"), {"x": i})
    deadline = time.monotonic() + 3
    while _rows_in_main_file(database, tmp_path) < 3:
        assert time.monotonic() < deadline, "the commits were not checkpointed"
        time.sleep(0.05)


def test_bulk_insert_stores_what_sqlalchemy_would(db_url: str) -> None:
    table = Table(f"bulk_{uuid.uuid4().hex[:8]}", MetaData(),
                  Column("id", Uuid, primary_key=True),
                  Column("name", String(20)), Column("at", UTCDateTime))
    engine = get_engine(db_url)
    table.create(engine)
    try:
        insert = bulk_insert(engine.dialect, table, ("id", "name"), ("at",))
        ids = [uuid7() for _ in range(3)]
        rows = [insert.row({"id": i, "name": f"n{n}"}) for n, i in enumerate(ids)]
        at = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
        with engine.begin() as connection:
            insert.execute(connection, rows, at=at)
        with engine.connect() as connection:
            found = connection.execute(select(table).order_by(table.c.name)).all()
        assert [(r.id, r.name, r.at) for r in found] == [
            (i, f"n{n}", at) for n, i in enumerate(ids)]
    finally:
        table.drop(engine)


def test_uuid7_is_a_version_7_uuid_that_grows_with_time() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert first < second and first.hex < second.hex
    assert len({uuid7() for _ in range(1000)}) == 1000


def test_sqlite_commits_are_fsynced_before_they_return(tmp_path: Path) -> None:
    """An accepted submission must survive a power cut: WAL mode with synchronous=FULL on
    every engine (2 is FULL), the hot writers' included."""
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    for writer in (False, True):
        with get_engine(url, writer=writer).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2


def test_the_wal_shrinks_back_after_a_burst(tmp_path: Path, monkeypatch: Any) -> None:
    """A burst of writes grows the WAL; once a checkpoint has copied it all, the next write
    starts the WAL over and SQLite cuts the file down to the limit."""
    monkeypatch.setattr(db, "WAL_SIZE_LIMIT", 1024 * 1024)
    database = tmp_path / "burst.db"
    url = f"sqlite:///{database}"
    wal = Path(f"{database}-wal")
    with get_engine(url).begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x BLOB)")
    with write_session(url) as session:  # one transaction of about 8 MB
        for _ in range(2000):
            session.execute(text("INSERT INTO t VALUES (randomblob(4000))"))
    assert wal.stat().st_size > 4 * 1024 * 1024
    deadline = time.monotonic() + 5
    while wal.stat().st_size > 1024 * 1024:
        assert time.monotonic() < deadline, f"the WAL stayed at {wal.stat().st_size} bytes"
        time.sleep(0.6)  # past the checkpoint interval: the next write follows a checkpoint
        with write_session(url) as session:
            session.execute(text("INSERT INTO t VALUES (x'00')"))
