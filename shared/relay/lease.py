"""One active relay per outbox table: the lease of a table (see `TableLease`)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
from typing import Any

from sqlalchemy import make_url, text

from shared.db import get_engine
from shared.settings import Settings

log = logging.getLogger("shared.relay")


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
