"""Rate limits: a token bucket (`rate` tokens a second, bursts up to `capacity`), one per
key in process memory, and counts per fixed time window in the database (`WindowCounter`),
shared by every process of a service and kept across restarts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db import UTCDateTime


def client_key(secret_key: str, address: str) -> str:
    """The key a client is limited under: its IPv4 address or IPv6 /64 (one subscriber line
    gets a whole /64), keyed-hashed so that no address is stored or logged in clear."""
    try:
        ip = ipaddress.ip_address(address)
        net = str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 \
            else str(ip)
    except ValueError:
        net = address
    return hmac.new(secret_key.encode(), f"client:{net}".encode(),
                    hashlib.sha256).hexdigest()[:32]


class TokenBucket:
    def __init__(self, rate: float, capacity: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self) -> float:
        """Seconds until there is a token (0: there is one); takes nothing."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def try_take(self) -> float:
        """Take a token if there is one and return 0; else return seconds until there is."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    async def take(self) -> None:
        while (wait := self.try_take()) > 0:  # noqa: ASYNC110 - waiting for time, not an event
            await asyncio.sleep(wait)


class KeyedRateLimiter:
    """One token bucket per key (e.g. an API key id), in process memory; the least recently
    used buckets are dropped past `max_keys`."""

    def __init__(self, rate: float, capacity: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.capacity = capacity
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()  # sync endpoints call it from worker threads

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.capacity)
            if len(self._buckets) >= self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = bucket  # most recently used last
        return bucket

    def try_take(self, key: str) -> float:
        """0 if the request may go ahead; else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            return self._bucket(key).try_take()

    def wait_for(self, key: str) -> float:
        """Seconds until `key` has a token again (0: it has one now); takes nothing."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            return self._bucket(key).wait()


class WindowCounterMixin:
    """Columns of a service's window-counter table (`class RateWindow(WindowCounterMixin,
    Base)` with its prefix): how many times `key` was counted in the window that starts at
    `window_start`."""

    __tablename__: str

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


def take_in_window(session: Session, model: Any, key: str, limit: int, window: timedelta,
                   now: datetime) -> bool:
    """Count one for `key` in the current fixed window if fewer than `limit` were counted
    there; False (nothing counted) when the limit is reached. Atomic across processes and
    concurrent transactions: a conditional UPDATE (the row is locked until commit). Counted
    with the caller's transaction: a rolled-back one counts nothing. Fixed windows: up to
    twice `limit` can pass around a window's boundary. Past windows are deleted, so a table
    holds one window length."""
    seconds = window.total_seconds()
    start = datetime.fromtimestamp(now.timestamp() // seconds * seconds, now.tzinfo)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(model).values(key=key, window_start=start, count=0)
                    .on_conflict_do_nothing())
    counted = session.execute(update(model).where(
        model.key == key, model.window_start == start, model.count < limit)
        .values(count=model.count + 1).execution_options(synchronize_session=False))
    session.execute(delete(model).where(model.window_start < start))  # past windows
    return bool(getattr(counted, "rowcount", 0))
