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
