"""Detection agents: overdose reports -> spike signals, drug-check results -> contamination
signals, over changelog-backed tables (see `processors` for the logic and table layout),
and the novelty stage (`novelty`), which decides "never seen anywhere".

Any number of workers run in one consumer group. Reports are keyed by state and results by
region (`shared.partition_keys`), so every key of every table is written while handling
one source partition: the tables are co-partitioned with their source topic (a key's
changelog partition is its source partition) and a rebalance moves a key's state with its
partition. The novelty table is co-partitioned with the novelty topic. See
docs/detection.md, "N workers".
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from faust import current_event
from faust.types import TP

from services.detection.app import app as app  # re-exported: `lookout worker detection` runs it
from services.detection.config import load_config
from services.detection.novelty import Candidate, Order, Partition, parse_bounds
from services.detection.offsets import Contiguous
from services.detection.ordered import OrderedSource
from services.detection.processors import Processor
from services.detection.tablecache import WriteBehind
from services.detection.tables import Tables
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.faust_patches import bind_current_event, committed_offset
from shared.settings import get_settings
from shared.topics import DETECTION_NOVELTY, DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SIGNALS, Topic

log = logging.getLogger(__name__)
RELEASE_INTERVAL = 0.2  # s between checks for held messages a caught-up partition freed
BOUNDS_INTERVAL = 1.0  # s between bounds reports to the novelty stage (sooner after a forward)


def _raw_topic(name: str, partitions: int, internal: bool = False) -> Any:
    return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions,
                     internal=internal)


results_topic = _raw_topic(DRUGCHECK_RESULTS.name, DRUGCHECK_RESULTS.partitions)
results_dlq = _raw_topic(DRUGCHECK_RESULTS.dlq, DRUGCHECK_RESULTS.partitions)
reports_topic = _raw_topic(OVERDOSE_REPORTS.name, OVERDOSE_REPORTS.partitions)
reports_dlq = _raw_topic(OVERDOSE_REPORTS.dlq, OVERDOSE_REPORTS.partitions)
signals_topic = _raw_topic(SIGNALS.name, SIGNALS.partitions)
novelty_topic = _raw_topic(DETECTION_NOVELTY.name, DETECTION_NOVELTY.partitions, internal=True)


def _source_partition() -> int:
    event = current_event()
    assert event is not None, "a table write outside a message"
    return int(event.message.partition)


def _table(name: str, help_: str, partitions: int = DRUGCHECK_RESULTS.partitions
           ) -> WriteBehind:
    # co-partitioned with the source topic: a write goes to the changelog partition of the
    # message that made it
    return WriteBehind(app.Table(name, partitions=partitions, key_type=str, help=help_),
                       _source_partition)


tables = Tables(
    spike_counts=_table("spike-areas", "overdose reports per area: counts per event-time bucket",
                        OVERDOSE_REPORTS.partitions),
    marks=_table("marks", "newest event-time day per region (contamination)"),
    episodes=_table("episodes", "open signal per (region, pattern, substance)"),
    seen=_table("substances-seen", "last time each substance was seen per region"),
    clusters=_table("clusters", "recent high-risk results per (region, substance)"),
    positivity=_table("positivity", "samples and positives per region, substance and day"),
    spike_episodes=_table("spike-episodes", "open spike signal per area",
                          OVERDOSE_REPORTS.partitions),
)
novelty_table = app.Table("novelty", partitions=DETECTION_NOVELTY.partitions, key_type=str,
                          help="the first result anywhere with each substance")


async def _send(key: str, payload: str) -> None:
    await signals_topic.send(key=key.encode(), value=payload.encode())


async def _forward(substance: str, candidate: dict[str, Any]) -> None:
    await novelty_topic.send(key=substance.encode(), value=json.dumps(candidate).encode())
    bounds_reporter.forwarded = True


processor = Processor(load_config(get_settings()), tables, _send, _forward)


class _Committed(Mapping[int, "int | None"]):
    """The consumer's committed offset (the next to read) per partition of a source topic:
    undo entries below it are never read again (`asof`)."""

    def __init__(self, topic: Topic) -> None:
        self.topic = topic.name
        self.partitions = topic.partitions

    def __getitem__(self, partition: int) -> int | None:
        return committed_offset(app.consumer, TP(self.topic, partition))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.partitions))

    def __len__(self) -> int:
        return self.partitions


processor.committed_reports = _Committed(OVERDOSE_REPORTS)
processor.committed_results = _Committed(DRUGCHECK_RESULTS)


ordered_results = OrderedSource(DRUGCHECK_RESULTS.name, "contamination",
                           DrugCheckResultV1.model_validate_json,
                           lambda r: r.collected_at.timestamp(), processor.on_result,
                           results_dlq, tables.of_results())
ordered_reports = OrderedSource(OVERDOSE_REPORTS.name, "spikes",
                           OverdoseReportV1.model_validate_json,
                           lambda r: r.occurred_at.timestamp(), processor.on_report,
                           reports_dlq, tables.of_reports())


@app.agent(results_topic)
async def contamination(stream: Any) -> None:
    await ordered_results.run(stream.noack())


@app.agent(reports_topic)
async def spikes(stream: Any) -> None:
    await ordered_reports.run(stream.noack())


class _Bounds:
    """Reports the results partitions' bounds (`novelty.Bound`) to every novelty partition
    every `BOUNDS_INTERVAL` s, and at the next check after this worker forwarded a
    candidate (so that one worker's own candidates wait one check, not an interval)."""

    def __init__(self) -> None:
        self.sent_at = 0.0
        self.forwarded = False

    async def report(self) -> None:
        now = time.monotonic()
        if not self.forwarded and now - self.sent_at < BOUNDS_INTERVAL:
            return
        bounds = ordered_results.bounds()
        if not bounds:
            return
        self.forwarded, self.sent_at = False, now
        value = json.dumps({"w": bounds}).encode()
        for partition in range(DETECTION_NOVELTY.partitions):
            await novelty_topic.send(key=b"~bounds", value=value, partition=partition)


bounds_reporter = _Bounds()


class _Novelty:
    """The novelty stage on the partitions of the novelty topic this worker owns: candidates
    held until `novelty.Partition` releases them, then one of their two signals sent;
    messages acknowledged in offset order per partition once released."""

    def __init__(self) -> None:
        self.parts: dict[int, Partition] = {}
        self.unacked: dict[int, deque[list[Any]]] = {}  # per partition: [event, done]
        self.offsets = Contiguous(app, DETECTION_NOVELTY.name)
        self.stream: Any = None

    def _first(self, substance: str) -> Order | None:
        value = novelty_table.get(substance)
        return None if value is None else (float(value["t"]), str(value["id"]))

    async def run(self, stream: Any) -> None:
        self.stream = stream
        async for event in stream.events():
            message = event.message
            if not await self.offsets.take(message):
                continue  # fetched before a rebalance, skipped or taken already
            p = message.partition
            part = self.parts.setdefault(p, Partition(DRUGCHECK_RESULTS.partitions))
            entry = [event, False]
            self.unacked.setdefault(p, deque()).append(entry)
            try:
                value = json.loads(bytes(event.value or b""))
                key = bytes(message.key or b"").decode()
                if "w" in value:
                    for source, last, caught_up in parse_bounds(value):
                        part.report(source, last, caught_up)
                    entry[1] = True
                else:
                    candidate = Candidate.from_json(key, value)
                    candidate.event = entry
                    part.add(candidate)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("novelty: undecodable message at %s/%s: %s", p, message.offset, exc)
                entry[1] = True
            bind_current_event(event)  # table writes and sends belong to it
            for candidate, first in part.ready(self._first):
                if first and novelty_table.get(candidate.substance) is None:
                    novelty_table[candidate.substance] = {"t": candidate.at,
                                                          "id": candidate.event_id}
                payload = candidate.first if first else candidate.other
                await _send(candidate.region, payload)
                candidate.event[1] = True
            await self._ack(p)

    @staticmethod
    def partitions() -> list[int]:
        return [tp.partition for tp in app.consumer.assignment()
                if tp.topic == DETECTION_NOVELTY.name]

    @staticmethod
    def _current(event: Any) -> bool:
        return bool(event.message.generation_id == app.consumer_generation_id)

    async def _ack(self, partition: int) -> None:
        """Acknowledge in offset order: faust commits up to the first gap in what was
        acknowledged, so a later offset acknowledged before a held one would commit past
        it (a stale acknowledgement after a rebalance is not made at all)."""
        queue = self.unacked.get(partition)
        while queue and queue[0][1]:
            event = queue.popleft()[0]
            if self._current(event):
                await self.stream.ack(event)

    def forget(self, revoked: set[TP]) -> None:
        for tp in revoked:
            if tp.topic == DETECTION_NOVELTY.name:
                self.offsets.forget({tp.partition})
                self.parts.pop(tp.partition, None)
                self.unacked.pop(tp.partition, None)


novelty_stage = _Novelty()


@app.agent(novelty_topic)
async def novelty(stream: Any) -> None:
    await novelty_stage.run(stream.noack())


@app.timer(RELEASE_INTERVAL)
async def release_caught_up() -> None:
    await ordered_results.release()
    await ordered_reports.release()
    await bounds_reporter.report()
    await ordered_results.offsets.watch(ordered_results.partitions())
    await ordered_reports.offsets.watch(ordered_reports.partitions())
    await novelty_stage.offsets.watch(novelty_stage.partitions())


async def forget_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
    ordered_results.forget(revoked)
    ordered_reports.forget(revoked)
    novelty_stage.forget(revoked)
    processor.forget()


async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
    ordered_results.assigned()
    ordered_reports.assigned()


app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
