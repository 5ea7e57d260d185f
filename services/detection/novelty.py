"""The novelty stage: which result is the first anywhere to hold a substance (pure; the
`novelty` agent feeds it).

"Never seen anywhere" is the only detection state that spans every region, so it cannot
live in one source partition. Each first-stage worker decides everything else on its own
partitions and forwards, keyed by substance, only a result whose substance is new to its
source partition and to its region, where being new anywhere changes the signal
(`Processor._defer_novel`): the candidate carries its event time and id, its source
partition and offset, and both signals. Each first-stage worker also reports, per source
partition it owns, the (time, id) of the last result it handled and whether the
partition is caught up (`Bound`), on change and as a slow heartbeat, to every partition of
the novelty topic.

The rule: the first anywhere of a substance is the candidate of smallest (time, id). A
candidate is released once every other source partition can no longer forward an earlier
one: it has forwarded its candidate of the substance already, its bound is at or past the
candidate, or a report that it is caught up arrived after the candidate. Each partition
carries its results in time order and forwards a substance once, so that bound holds; once
a substance's first is decided, any other candidate of it is "not first" at once (also one
older than the first that comes late: a late event, handled in arrival order as everywhere
else). The decision depends only on the events, not on how
the partitions interleave or how many workers run.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Order = tuple[float, str]  # (event time, event id)


@dataclass
class Candidate:
    substance: str
    at: float
    event_id: str
    source: int  # source partition
    offset: int  # source offset
    region: str
    first: str  # the signal if it is the first anywhere
    other: str  # the signal if it is not
    arrival: int = 0  # when it arrived here (a counter)
    event: Any = None  # what the agent acknowledges once it is released

    @property
    def order(self) -> Order:
        return (self.at, self.event_id)

    @classmethod
    def from_json(cls, substance: str, value: dict[str, Any]) -> Candidate:
        return cls(substance, float(value["t"]), str(value["id"]), int(value["p"]),
                   int(value["o"]), str(value["region"]), str(value["first"]),
                   str(value["other"]))


@dataclass
class Bound:
    """What a source partition can still forward: nothing before `last` (the last result
    handled); nothing at all if `caught_up` (as of the report that said so)."""

    last: Order | None = None
    caught_up: bool = False
    arrival: int = -1  # when the report that set `caught_up` arrived


@dataclass
class Partition:
    """One novelty partition's held candidates and the source bounds reported to it."""

    sources: int
    bounds: dict[int, Bound] = field(default_factory=dict)
    pending: dict[str, list[tuple[Order, int, Candidate]]] = field(default_factory=dict)
    arrivals: int = 0

    def report(self, source: int, last: Order | None, caught_up: bool) -> None:
        self.arrivals += 1
        bound = self.bounds.setdefault(source, Bound())
        if last is not None and (bound.last is None or last > bound.last):
            bound.last = last  # a new owner re-handling older results lowers nothing
        bound.caught_up = caught_up
        bound.arrival = self.arrivals

    def add(self, candidate: Candidate) -> None:
        self.arrivals += 1
        candidate.arrival = self.arrivals
        # a redelivered candidate is held twice: both get the same answer
        heapq.heappush(self.pending.setdefault(candidate.substance, []),
                       (candidate.order, self.arrivals, candidate))

    def passed(self, candidate: Candidate) -> bool:
        """No other source partition can still forward a candidate before this one (a
        source forwards a substance once: one holding a candidate of it is done)."""
        done = {c.source for _, _, c in self.pending.get(candidate.substance, ())}
        for source in range(self.sources):
            if source in done:
                continue
            bound = self.bounds.get(source)
            if bound is None:
                return False
            if bound.last is not None and bound.last >= candidate.order:
                continue
            if not (bound.caught_up and bound.arrival > candidate.arrival):
                return False
        return True

    def ready(self, first_of: Callable[[str], Order | None]
              ) -> list[tuple[Candidate, bool]]:
        """Candidates that can be released now, each with whether it is the first
        anywhere; `first_of(substance)` is the first decided so far (the table)."""
        out: list[tuple[Candidate, bool]] = []
        for substance in list(self.pending):
            held = self.pending[substance]
            first = first_of(substance)
            if first is None:
                head = held[0][2]
                if not self.passed(head):
                    continue
                first = head.order
            for _, _, c in held:
                out.append((c, c.order == first))
            del self.pending[substance]
        return out


def parse_bounds(value: dict[str, Any]) -> Iterable[tuple[int, Order | None, bool]]:
    """A report's bounds: {source: [time, id, caught up]} (time and id None: nothing
    handled yet)."""
    for source, (at, event_id, caught_up) in value["w"].items():
        last = None if at is None else (float(at), str(event_id))
        yield int(source), last, bool(caught_up)
