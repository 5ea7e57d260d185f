"""Event-time order across source partitions (pure; the agents hold faust events in it).

A county or state area gathers postal codes from several partitions, and partitions are
consumed at different paces: in a backfill or a drained backlog one partition can run weeks
ahead of another. So the agents do not handle messages as they arrive: they hold them here,
one queue per partition in offset order, and take them as a merge of those queues by event
time (time, then event id): the oldest head goes first, once every partition whose queue
is empty has nothing more to bring (it is caught up: everything up to its high watermark
was received). Each partition carries its keys' events in time order (as the producers
publish them), so no partition can then still bring an older message. A partition's
messages always come out in its offset order: the processors' per-partition offset marks
(a redelivery is not counted twice) rely on it. See docs/detection.md, "Event time, not
arrival order". At most `HELD_MAX` messages are held: beyond, the oldest head is taken
anyway (a partition far behind then gives late events, as without the merge).

Held messages are acknowledged once handled, in offset order per partition, so a commit
never covers a message still held (after a crash they are delivered again).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

HELD_MAX = 50_000  # messages held before the oldest is taken anyway (memory bound)
# (partition, next offset to receive, or None if nothing received) -> caught up?
CaughtUp = Callable[[int, "int | None"], bool]


@dataclass
class Held:
    at: float  # event time, epoch seconds
    tiebreak: str  # the event id: heads of the same time are taken in this order
    partition: int
    offset: int
    item: Any  # the parsed event (None: not handled, only acknowledged in its turn)
    event: Any = None  # the faust event (acknowledged once handled)


class EventTimeMerge:
    def __init__(self, held_max: int = HELD_MAX) -> None:
        self.held_max = held_max
        self._queues: dict[int, deque[Held]] = {}
        self._heads: list[tuple[float, str, int]] = []  # (at, tiebreak, partition)
        self._next: dict[int, int] = {}  # next offset to receive per partition
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def next_offset(self, partition: int) -> int | None:
        return self._next.get(partition)

    def holds(self, partition: int) -> bool:
        return bool(self._queues.get(partition))

    def add(self, held: Held) -> None:
        """Hold a received message (one received already is ignored)."""
        p = held.partition
        if held.offset < self._next.get(p, 0):
            return
        self._next[p] = held.offset + 1
        queue = self._queues.setdefault(p, deque())
        queue.append(held)
        self._count += 1
        if len(queue) == 1:
            heapq.heappush(self._heads, (held.at, held.tiebreak, p))

    def skip(self, partition: int, offset: int, event: Any = None) -> None:
        """A message that is not handled (undecodable): acknowledged in its turn."""
        self.add(Held(-math.inf, "", partition, offset, None, event))

    def ready(self, partitions: Iterable[int], caught_up: CaughtUp) -> list[Held]:
        """The held messages that can be taken now, in order (those with `item` None are
        only to be acknowledged)."""
        blocking = {p for p in partitions
                    if not self._queues.get(p) and not caught_up(p, self._next.get(p))}
        out = []
        while self._heads:
            _, _, p = self._heads[0]
            if blocking and (len(blocking) > 1 or p not in blocking) \
                    and self._count <= self.held_max:
                break
            heapq.heappop(self._heads)
            queue = self._queues[p]
            out.append(queue.popleft())
            self._count -= 1
            if queue:
                head = queue[0]
                heapq.heappush(self._heads, (head.at, head.tiebreak, p))
            elif not caught_up(p, self._next.get(p)):
                blocking.add(p)
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held of partitions this worker no longer owns (a rebalance): they
        are delivered again from the committed offset, here or to another worker."""
        for p in set(partitions):
            self._count -= len(self._queues.pop(p, ()))
            self._next.pop(p, None)
        self._heads = [h for h in self._heads if h[2] in self._queues and self._queues[h[2]]]
        heapq.heapify(self._heads)
