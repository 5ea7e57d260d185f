"""A read cache in front of a Faust table, with writes held until `flush`.

Every Faust table read goes through several layers of Faust bookkeeping, and a spike
evaluation reads up to a few hundred buckets; the worker is the only writer of the
partitions it owns, so it can keep what it read or wrote until a rebalance (`forget`).
Writes are held too: the agents write them after a batch of messages (`take`), before
Faust acknowledges the messages, so a key written by many messages of a batch costs one
changelog message, and a commit covers every changelog write of the committed messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

_MISSING = object()
CACHE_MAX = 500_000  # cached keys before the read cache is dropped (it refills from the table)


def _no_partition() -> int | None:
    return None


class WriteBehind(MutableMapping[str, Any]):
    """A table seen through a read cache, with writes held until `flush` (one changelog
    message per changed key per batch). The worker is the only writer of its partitions'
    keys until a rebalance (`forget`).

    Each held write remembers the changelog partition it belongs to (`partition()` when
    it is made: in the worker, the partition of the message being handled), whichever
    message the agent handles when it writes the batch."""

    def __init__(self, table: MutableMapping[str, Any],
                 partition: Callable[[], int | None] = _no_partition) -> None:
        self.table = table
        self._partition = partition
        self._cache: dict[str, Any] = {}
        self._dirty: dict[str, int | None] = {}  # key -> partition of its held write

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
        self._dirty[key] = self._partition()

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError("detection tables are never deleted from")

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def forget(self) -> None:
        """Drop the read cache and the held writes (a rebalance: another worker may have
        written a key, and the messages that made the held writes were not acknowledged:
        they are delivered again from the committed offset, here or elsewhere)."""
        self._cache = {}
        self._dirty = {}

    def take(self) -> list[tuple[str, Any, int | None]]:
        """The held writes, (key, value, partition), to be written by the caller; none is
        held afterwards."""
        held = [(key, self._cache[key], partition) for key, partition in self._dirty.items()]
        self._dirty = {}
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
        return held

    def flush(self) -> None:
        """Write the held writes into the table itself (plain mappings)."""
        for key, value, _ in self.take():
            self.table[key] = value
