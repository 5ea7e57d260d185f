"""A read cache in front of a Faust table, with writes held until `flush`.

Every Faust table read goes through several layers of Faust bookkeeping, and a spike
evaluation reads up to a few hundred buckets; the worker is the only writer of the
partitions it owns, so it can keep what it read or wrote until a rebalance (`forget`).
Writes are held too: the agents flush after a batch of messages, before Faust acknowledges
them, so a key written by many messages of a batch costs one changelog message, and a
commit covers every changelog write of the committed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

_MISSING = object()
CACHE_MAX = 500_000  # cached keys before the read cache is dropped (it refills from the table)


def _no_owner() -> Any:
    return None


def _bind_nothing(owner: Any) -> None:
    return None


class WriteBehind(MutableMapping[str, Any]):
    """A table seen through a read cache, with writes held until `flush` (one changelog
    message per changed key per batch). The worker is the only writer of its partitions'
    keys until a rebalance (`forget`).

    Each held write remembers the message it belongs to (`owner()` when it is made: in the
    worker, faust's current event) and is flushed under it (`bind(owner)`), so it goes to
    that message's changelog partition whichever message the agent handles when it
    flushes."""

    def __init__(self, table: MutableMapping[str, Any],
                 owner: Callable[[], Any] = _no_owner,
                 bind: Callable[[Any], None] = _bind_nothing) -> None:
        self.table = table
        self._owner = owner
        self._bind = bind
        self._cache: dict[str, Any] = {}
        self._dirty: dict[str, Any] = {}  # key -> owner of its held write

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
        self._dirty[key] = self._owner()

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("detection tables are never deleted from")

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def held(self) -> int:
        return len(self._dirty)

    def forget(self) -> None:
        """Drop the read cache and the held writes (a rebalance: another worker may have
        written a key, and the messages that made the held writes were not acknowledged:
        they are delivered again from the committed offset, here or elsewhere)."""
        self._cache = {}
        self._dirty = {}

    def flush(self) -> None:
        bound: Any = _MISSING
        for key, owner in self._dirty.items():
            if owner is not bound and owner is not None:
                self._bind(owner)
                bound = owner
            self.table[key] = self._cache[key]
        self._dirty = {}
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
