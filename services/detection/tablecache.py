"""A read cache in front of a Faust table, with writes held until `flush`.

Every Faust table read goes through several layers of Faust bookkeeping, and a spike
evaluation reads up to a few hundred buckets; the worker is the only writer of the
partitions it owns, so it can keep what it read or wrote until a rebalance (`forget`). The
agents flush after each message, before Faust acknowledges it: a commit then covers every
changelog write of the committed messages.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

_MISSING = object()
CACHE_MAX = 500_000  # cached keys before the read cache is dropped (it refills from the table)


class WriteBehind(MutableMapping[str, Any]):
    """A table seen through a read cache, with writes held until `flush` (one changelog
    message per changed key per batch). The worker is the only writer of its partitions'
    keys until a rebalance (`forget`)."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self._cache: dict[str, Any] = {}
        self._dirty: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self.table.get(key)
            self._cache[key] = value
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._dirty.add(key)

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("detection tables are never deleted from")

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def forget(self) -> None:
        """Drop the read cache (after a rebalance another worker may have written a key);
        held writes stay for the flush of the message that made them."""
        self._cache = {key: self._cache[key] for key in self._dirty}

    def flush(self) -> None:
        for key in self._dirty:
            self.table[key] = self._cache[key]
        self._dirty.clear()
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
