"""Table values that can be read as they were before a given message: exact recovery.

After a crash the changelog-recovered tables can hold the effects of messages after the
committed offset (some keys, not necessarily all: each key's changelog write lands or not).
Those messages are delivered again, and each must raise exactly the signals it raised the
first time. So every table value keeps an undo log, `"u": [[partition, offset, value
before that message's write], ...]`, oldest first, and a message at (partition p, offset m)
reads each key as it was before m: the value before the first write of p at an offset
>= m. A key holding such a write is *ahead*: m's own write is in it already, so m does not
write it again (what m would write is what it wrote the first time; the processors are
deterministic). Entries below the source partition's committed offset are never read again
(a redelivery starts at that offset) and are dropped at the next write of the key.

Keys written by messages of several source partitions (a county's ZIP codes, a substance
seen anywhere) are rolled back by their own partition's writes only: as before, the
interleaving of partitions is not reproduced (see docs/detection.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

log = logging.getLogger(__name__)
UNDO = "u"
UNDO_MAX = 20_000  # entries kept per key whatever the commits (a stalled commit loop)


def before(raw: dict[str, Any] | None, partition: int, offset: int
           ) -> tuple[dict[str, Any] | None, bool]:
    """(the value before message (partition, offset), whether `raw` is ahead of it)."""
    if raw is None:
        return None, False
    for p, o, prev in raw.get(UNDO) or ():
        if p == partition and o >= offset:
            return prev, True
    return raw, False


def _plain(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None or UNDO not in value:
        return value
    return {k: v for k, v in value.items() if k != UNDO}


class Message:
    """The table reads and writes of one message at (partition, offset): every key is read
    as it was before this message (then as this message left it), and written only when it
    is not ahead. `committed` gives the committed offset per source partition (entries
    below it are dropped)."""

    def __init__(self, partition: int, offset: int,
                 committed: Mapping[int, int | None] | None = None) -> None:
        self.partition = partition
        self.offset = offset
        self.committed = committed or {}
        # (table id, key) -> [stored value, value before this message, current, ahead], for
        # the keys this message wrote or found ahead (any other key reads as stored)
        self._keys: dict[tuple[int, str], list[Any]] = {}

    def _entry(self, table: MutableMapping[str, Any], key: str) -> list[Any]:
        entry = self._keys.get((id(table), key))
        if entry is None:
            raw = table.get(key)
            value, ahead = before(raw, self.partition, self.offset)
            entry = [raw, value, value, ahead]
            self._keys[(id(table), key)] = entry
        return entry

    def get(self, table: MutableMapping[str, Any], key: str) -> Any:
        if self._keys:
            entry = self._keys.get((id(table), key))
            if entry is not None:
                return entry[2]
        raw = table.get(key)
        if raw is None or not raw.get(UNDO):
            return raw
        value, ahead = before(raw, self.partition, self.offset)
        if ahead:
            self._keys[(id(table), key)] = [raw, value, value, ahead]
        return value

    def ahead(self, table: MutableMapping[str, Any], key: str) -> bool:
        return bool(self._entry(table, key)[3])

    def put(self, table: MutableMapping[str, Any], key: str, value: dict[str, Any]) -> None:
        entry = self._entry(table, key)
        entry[2] = value
        if entry[3]:
            return  # this message's write is in the table already
        raw = entry[0]
        undo = [e for e in (raw.get(UNDO) or ()) if e[1] >= (self.committed.get(e[0]) or 0)] \
            if raw else []
        if len(undo) >= UNDO_MAX:
            log.warning("undo log of %s full: dropping its oldest entries", key)
            undo = undo[-UNDO_MAX + 1:]
        undo.append([self.partition, self.offset, _plain(entry[1])])
        stored = {k: v for k, v in value.items() if k != UNDO}
        stored[UNDO] = undo
        table[key] = stored
