"""A token bucket: `rate` tokens a second, bursts up to `capacity`."""

from __future__ import annotations

import asyncio
import time


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

    def try_take(self, key: str) -> float:
        """0 if the request may go ahead; else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.capacity)
            if len(self._buckets) >= self.max_keys:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = bucket  # most recently used last
        return bucket.try_take()
