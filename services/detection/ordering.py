"""Event-time order across source partitions (pure; the agents hold faust events in it).

A county or state area gathers postal codes from several partitions, and partitions are
consumed at different paces: in a backfill or a drained backlog one partition can run weeks
ahead of another. So the agents do not handle messages as they arrive: they hold them here
and handle them in event-time order (time, then event id), releasing a message only when no
partition can still bring an older one. A partition is bounded by the newest event time
received from it (each partition carries its keys' events in time order, as the producers
publish them), and it does not hold anything back once everything up to its high watermark
has been received (caught up): see docs/detection.md, "Event time, not arrival order".

Held messages are acknowledged only once handled, and in offset order per partition, so a
commit never covers a message still held (after a crash they are delivered again).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# (partition, next offset to receive, or None if nothing received) -> caught up?
CaughtUp = Callable[[int, "int | None"], bool]


@dataclass(order=True)
class Held:
    at: float  # event time, epoch seconds
    tiebreak: str  # the event id: events of the same time are taken in this order
    partition: int
    offset: int
    item: Any = field(compare=False)  # the parsed event
    event: Any = field(compare=False, default=None)  # the faust event (acknowledged later)
    done: bool = field(compare=False, default=False)


class EventTimeMerge:
    def __init__(self) -> None:
        self._heap: list[Held] = []
        self._newest: dict[int, float] = {}  # newest event time received per partition
        self._next: dict[int, int] = {}  # next offset to receive per partition
        self._unacked: dict[int, deque[Held]] = {}  # received, not yet acknowledged
        self._held: set[tuple[int, int]] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, held: Held) -> None:
        """Hold a received message (a message delivered again while held is ignored)."""
        key = (held.partition, held.offset)
        if key in self._held:
            return
        self._held.add(key)
        heapq.heappush(self._heap, held)
        p = held.partition
        self._newest[p] = max(self._newest.get(p, -math.inf), held.at)
        self._next[p] = max(self._next.get(p, 0), held.offset + 1)
        self._unacked.setdefault(p, deque()).append(held)

    def skip(self, partition: int, offset: int, event: Any = None) -> list[Held]:
        """A message that is not held (undecodable): acknowledged in its turn."""
        held = Held(-math.inf, "", partition, offset, None, event)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        self._unacked.setdefault(partition, deque()).append(held)
        return self.handled(held)

    def bound(self, partitions: Iterable[int], caught_up: CaughtUp) -> float:
        """No partition can still bring a message older than this."""
        out = math.inf
        for p in partitions:
            if not caught_up(p, self._next.get(p)):
                out = min(out, self._newest.get(p, -math.inf))
        return out

    def ready(self, partitions: Iterable[int], caught_up: CaughtUp) -> list[Held]:
        """The held messages that can be handled now, in event-time order."""
        bound = self.bound(partitions, caught_up)
        out = []
        while self._heap and self._heap[0].at <= bound:
            held = heapq.heappop(self._heap)
            self._held.discard((held.partition, held.offset))
            out.append(held)
        return out

    def handled(self, held: Held) -> list[Held]:
        """Mark a released message handled; the messages now to acknowledge, in offset
        order per partition (every message before them in the partition is handled)."""
        held.done = True
        queue = self._unacked.get(held.partition)
        out = []
        while queue and queue[0].done:
            out.append(queue.popleft())
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held of partitions this worker no longer owns (a rebalance): they
        are delivered again from the committed offset, here or to another worker."""
        gone = set(partitions)
        self._heap = [h for h in self._heap if h.partition not in gone]
        heapq.heapify(self._heap)
        self._held = {k for k in self._held if k[0] not in gone}
        for p in gone:
            self._newest.pop(p, None)
            self._next.pop(p, None)
            self._unacked.pop(p, None)
