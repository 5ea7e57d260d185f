"""Detection agents in two stages, so that any number of workers in the consumer group give
the signals of one (docs/detection.md, "Scaling").

First stage, on the source topics (keyed by postal code):
- `reports` forwards each overdose report to `DETECTION_BY_AREA`, keyed by its spike area;
- `contamination` runs every contamination pattern of a region (a region lives in one
  source partition) except "novel substance", and forwards each result whose substances
  can be novel to `DETECTION_BY_SUBSTANCE`, keyed by substance.
Both carry the source partition and offset in headers, and punctuate every partition of the
through topic, per source partition they own, with the newest event time handled and
whether it is caught up (`_Forwarder`).

Second stage, on the through topics: `spikes` (areas) and `novelty` (substances: "never
seen anywhere" and "not seen in the region") take their messages in event-time order over
the *source* partitions (`ordering.SourceMerge`). Every table is co-partitioned with the
topic its agent reads (a write goes to the changelog partition of the message handled), so
a rebalance moves a key's state with its partition.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from faust.types import TP
from pydantic import ValidationError

from services.detection.app import app
from services.detection.config import load_config
from services.detection.ordering import EventTimeMerge, Held, SourceMerge
from services.detection.processors import Processor, Tables
from services.detection.tablecache import WriteBehind
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.faust_patches import bind_current_event, committed_offset
from shared.settings import get_settings
from shared.streams import dead_letter, handle_with_retries
from shared.topics import (
    DETECTION_BY_AREA,
    DETECTION_BY_SUBSTANCE,
    DRUGCHECK_RESULTS,
    OVERDOSE_REPORTS,
    SIGNALS,
    Topic,
)

log = logging.getLogger(__name__)
RELEASE_INTERVAL = 0.2  # s between checks for held messages a caught-up partition freed
PUNCTUATE_INTERVAL = 0.1  # s between punctuations (the most a live message waits for one)
SOURCE = "lk-src"  # header: "<source partition>,<source offset>"
SUBSTANCES = "lk-subs"  # header: the substance keys of a forwarded result, comma-separated
PUNCT = "lk-punct"  # header: "<source p>:<newest time>:<caught up 0/1>:<committed>;..."


def _raw_topic(name: str, partitions: int, internal: bool = False) -> Any:
    return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions,
                     internal=internal)


results_topic = _raw_topic(DRUGCHECK_RESULTS.name, DRUGCHECK_RESULTS.partitions)
results_dlq = _raw_topic(DRUGCHECK_RESULTS.dlq, DRUGCHECK_RESULTS.partitions)
reports_topic = _raw_topic(OVERDOSE_REPORTS.name, OVERDOSE_REPORTS.partitions)
reports_dlq = _raw_topic(OVERDOSE_REPORTS.dlq, OVERDOSE_REPORTS.partitions)
signals_topic = _raw_topic(SIGNALS.name, SIGNALS.partitions)
by_area_topic = _raw_topic(DETECTION_BY_AREA.name, DETECTION_BY_AREA.partitions, True)
by_substance_topic = _raw_topic(DETECTION_BY_SUBSTANCE.name, DETECTION_BY_SUBSTANCE.partitions,
                                True)


def _table(name: str, help_: str, partitions: int) -> WriteBehind:
    # No `use_partitioner`: a write goes to the partition of the message being handled.
    return WriteBehind(app.Table(name, partitions=partitions, key_type=str, help=help_))


_R, _A, _S = (DRUGCHECK_RESULTS.partitions, DETECTION_BY_AREA.partitions,
              DETECTION_BY_SUBSTANCE.partitions)
results_tables = Tables(
    spike_counts={}, seen={},
    marks=_table("marks", "newest event-time day per region (contamination)", _R),
    episodes=_table("episodes", "open signal per (region, pattern, substance)", _R),
    clusters=_table("clusters", "recent high-risk results per (region, substance)", _R),
    positivity=_table("positivity", "samples and positives per region, substance and day", _R),
)
area_tables = Tables(
    marks={}, seen={}, clusters={}, positivity={},
    spike_counts=_table("spike-areas", "overdose reports per area: counts per event-time bucket",
                        _A),
    episodes=_table("spike-episodes", "open spike signal per area", _A),
)
substance_tables = Tables(
    spike_counts={}, marks={}, clusters={}, positivity={},
    seen=_table("substances-seen", "last time each substance was seen per region", _S),
    episodes=_table("novel-episodes", "open novel-substance signal per (region, substance)", _S),
)
ALL_TABLES = (results_tables, area_tables, substance_tables)


async def _send(key: str, payload: str) -> None:
    await signals_topic.send(key=key.encode(), value=payload.encode())


config = load_config(get_settings())
results_processor = Processor(config, results_tables, _send)
area_processor = Processor(config, area_tables, _send)
substance_processor = Processor(config, substance_tables, _send)


def through_partition(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def _committed_offset(tp: TP) -> int | None:
    return committed_offset(app.consumer, tp)


def _caught_up(topic: str, partition: int, next_offset: int | None) -> bool:
    tp = TP(topic, partition)
    try:
        highwater = app.consumer.highwater(tp)
    except Exception:  # not fetched yet
        return False
    if highwater is None:
        return False
    if next_offset is None:
        next_offset = _committed_offset(tp) or 0
    return next_offset >= highwater


def _owned(topic: str) -> list[int]:
    return [tp.partition for tp in app.consumer.assignment() if tp.topic == topic]


def _raw(event: Any) -> bytes:
    return event.value if isinstance(event.value, bytes) else bytes(event.value or b"")


def _headers(message: Any) -> dict[str, bytes]:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: v for k, v in items}


class _Committed(Mapping[int, "int | None"]):
    """The consumer's committed offset (the next to read) per partition of a source topic:
    undo entries below it are never read again (`asof`)."""

    def __init__(self, topic: Topic) -> None:
        self.topic = topic.name
        self.partitions = topic.partitions

    def __getitem__(self, partition: int) -> int | None:
        return _committed_offset(TP(self.topic, partition))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.partitions))

    def __len__(self) -> int:
        return self.partitions


results_processor.committed_results = _Committed(DRUGCHECK_RESULTS)


class _Forwarder:
    """The first stage's side of a repartition: forwards carry their source partition and
    offset; `punctuate` tells every through partition, per source partition owned, the
    newest event time handled (nothing older is still to come from it) and whether it is
    caught up, and the source's committed offset (no re-forward goes below it)."""

    def __init__(self, source: Topic, through: Any, partitions: int) -> None:
        self.source = source.name
        self.through = through
        self.partitions = partitions
        self.newest: dict[int, float] = {}

    async def forward(self, key: str, raw: bytes, partition: int, offset: int,
                      headers: Iterable[tuple[str, bytes]] = ()) -> None:
        await self.through.send(
            key=key.encode(), value=raw, partition=through_partition(key, self.partitions),
            headers=[(SOURCE, f"{partition},{offset}".encode()), *headers])

    def handled(self, partition: int, at: float) -> None:
        self.newest[partition] = max(self.newest.get(partition, -math.inf), at)

    async def punctuate(self, caught: Callable[[int], bool]) -> None:
        """One message per through partition, for every source partition owned; sent at
        every interval (a head waits for a punctuation that arrives after it)."""
        parts = []
        for p in _owned(self.source):
            is_caught = caught(p)
            newest = self.newest.get(p)
            if newest is None and not is_caught:
                continue  # nothing known yet: the through partitions keep what they knew
            committed = _committed_offset(TP(self.source, p)) or 0
            parts.append(f"{p}:{newest if newest is not None else '-inf'}:{int(is_caught)}:"
                         f"{committed}")
        if not parts:
            return
        value = ";".join(parts).encode()
        for q in range(self.partitions):
            await self.through.send(key=b"", value=b"", partition=q, headers=[(PUNCT, value)])

    def forget(self, partitions: Iterable[int]) -> None:
        for p in set(partitions):
            self.newest.pop(p, None)


reports_forwarder = _Forwarder(OVERDOSE_REPORTS, by_area_topic, _A)
results_forwarder = _Forwarder(DRUGCHECK_RESULTS, by_substance_topic, _S)


class _Reports:
    """First stage for overdose reports: each forwarded, in offset order, to its area."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    async def run(self, stream: Any) -> None:
        async for event in stream.events():
            raw, message = _raw(event), event.message
            try:
                report = OverdoseReportV1.model_validate_json(raw)
            except (ValidationError, ValueError) as exc:
                await dead_letter(reports_dlq, message, raw, f"undecodable: {exc}",
                                  "detection", "reports")
            else:
                async def forward(r: OverdoseReportV1, raw: bytes = raw,
                                  message: Any = message) -> None:
                    await reports_forwarder.forward(config.area_of(r.region_id), raw,
                                                    message.partition, message.offset)

                await handle_with_retries(message, raw, report, service="detection",
                                          agent="reports", handle=forward, dlq=reports_dlq)
                reports_forwarder.handled(message.partition, report.occurred_at.timestamp())
            self.next[message.partition] = message.offset + 1
            await stream.ack(event)

    def caught(self, partition: int) -> bool:
        return _caught_up(OVERDOSE_REPORTS.name, partition, self.next.get(partition))

    def forget(self, partitions: Iterable[int]) -> None:
        for p in set(partitions):
            self.next.pop(p, None)


class _Ordered:
    """A source topic consumed in event-time order (`ordering.EventTimeMerge`): messages
    are held, handled when no partition of this worker can still bring an older one, and
    acknowledged in offset order once handled."""

    def __init__(self, topic: str, agent: str, parse: Callable[[bytes], Any],
                 at: Callable[[Any], float],
                 handle: Callable[[Any, int, int, bytes], Awaitable[None]], dlq: Any) -> None:
        self.topic, self.agent, self.parse, self.at = topic, agent, parse, at
        self.handle, self.dlq = handle, dlq
        self.merge = EventTimeMerge()
        self.pending: dict[int, int] = {}  # per partition: taken from the merge, not handled
        self.lock = asyncio.Lock()
        self.stream: Any = None

    def caught_up(self, partition: int, next_offset: int | None) -> bool:
        return _caught_up(self.topic, partition, next_offset)

    def caught(self, partition: int) -> bool:
        """Nothing held or being handled of the partition, and everything up to its high
        watermark received."""
        return not self.merge.holds(partition) and not self.pending.get(partition) and \
            self.caught_up(partition, self.merge.next_offset(partition))

    async def run(self, stream: Any) -> None:
        self.stream = stream
        async for event in stream.events():
            raw = _raw(event)
            message = event.message
            async with self.lock:
                try:
                    parsed = self.parse(raw)
                except (ValidationError, ValueError) as exc:
                    await dead_letter(self.dlq, message, raw, f"undecodable: {exc}",
                                      "detection", self.agent)
                    self.merge.skip(message.partition, message.offset, event)
                else:
                    self.merge.add(Held(self.at(parsed), str(parsed.event_id),
                                        message.partition, message.offset, parsed, event))
                await self._release()

    async def release(self) -> None:
        """Handle what became ready without a new message (a partition caught up)."""
        if len(self.merge) and self.stream is not None:
            async with self.lock:
                await self._release()

    async def _release(self) -> None:
        ready = self.merge.ready(_owned(self.topic), self.caught_up)
        for held in ready:
            self.pending[held.partition] = self.pending.get(held.partition, 0) + 1
        for held in ready:
            try:
                await self._handle(held)
            finally:
                self.pending[held.partition] -= 1

    async def _handle(self, held: Held) -> None:
        event = held.event
        if held.item is not None:
            bind_current_event(event)  # table writes and sends belong to it
            raw = _raw(event)

            async def handle(parsed: Any, held: Held = held, raw: bytes = raw) -> None:
                try:
                    await self.handle(parsed, held.partition, held.offset, raw)
                finally:
                    for tables in ALL_TABLES:
                        tables.flush()

            await handle_with_retries(event.message, raw, held.item, service="detection",
                                      agent=self.agent, handle=handle, dlq=self.dlq)
        if event is not None:
            await self.stream.ack(event)

    def forget(self, revoked: Iterable[int]) -> None:
        self.merge.forget(revoked)


class _Repartitioned:
    """A second stage: its through topic's messages taken in event-time order over the
    source partitions (one `SourceMerge` per through partition), acknowledged once handled
    (faust commits a partition up to its first message not acknowledged).

    The committed offset per source partition given to the processor (undo entries below
    it are dropped, see `asof`) is the lowest source offset that can still be handled
    again: of what is held, of what was handled or dropped as a re-forward since the
    through partition's committed offset, and the source's committed offset punctuated
    (a restarted first stage re-forwards from there)."""

    def __init__(self, topic: Topic, agent: str, sources: int, parse: Callable[[bytes], Any],
                 at: Callable[[Any], float],
                 handle: Callable[[Any, bytes | None, int, int, Mapping[int, int]],
                                  Awaitable[None]], dlq: Any) -> None:
        self.topic, self.agent, self.sources = topic.name, agent, sources
        self.parse, self.at, self.handle, self.dlq = parse, at, handle, dlq
        self.merges: dict[int, SourceMerge] = {}
        self.seen: dict[int, dict[int, deque[tuple[int, int]]]] = {}  # q -> p -> offsets
        self.source_committed: dict[int, dict[int, int]] = {}
        self.lock = asyncio.Lock()
        self.stream: Any = None

    async def run(self, stream: Any) -> None:
        self.stream = stream
        async for event in stream.events():
            async with self.lock:
                await self._receive(event)
                await self._release(event.message.partition)

    async def _receive(self, event: Any) -> None:
        message = event.message
        q = message.partition
        merge = self.merges.get(q)
        if merge is None:
            merge = self.merges[q] = SourceMerge(self.sources)
        headers = _headers(message)
        punct = headers.get(PUNCT)
        if punct is not None:
            known = self.source_committed.setdefault(q, {})
            for part in punct.decode().split(";"):
                source, newest, caught, committed = part.split(":")
                merge.punctuate(int(source), float(newest), caught == "1")
                known[int(source)] = max(known.get(int(source), 0), int(committed))
            await self.stream.ack(event)
            return
        raw = _raw(event)
        try:
            p, o = (int(x) for x in headers[SOURCE].decode().split(","))
            parsed = self.parse(raw)
        except (KeyError, ValidationError, ValueError) as exc:
            await dead_letter(self.dlq, message, raw, f"undecodable: {exc}", "detection",
                              self.agent)
            await self.stream.ack(event)
            return
        if not merge.add(Held(self.at(parsed), str(parsed.event_id), p, o,
                              (parsed, headers.get(SUBSTANCES)), event)):
            self._seen(q, p).append((message.offset, o))  # a re-forward
            await self.stream.ack(event)

    def _seen(self, q: int, p: int) -> deque[tuple[int, int]]:
        return self.seen.setdefault(q, {}).setdefault(p, deque())

    def _lowest(self, q: int) -> dict[int, int]:
        committed = _committed_offset(TP(self.topic, q)) or 0
        merge = self.merges[q]
        out = {}
        for p in range(self.sources):
            seen = self._seen(q, p)
            while seen and seen[0][0] < committed:
                seen.popleft()
            candidates = [self.source_committed.get(q, {}).get(p, 0)]
            candidates += [o for _, o in seen]
            held = merge.lowest_held(p)
            if held is not None:
                candidates.append(held)
            out[p] = min(candidates)
        return out

    async def release(self) -> None:
        if self.stream is not None:
            async with self.lock:
                for q in list(self.merges):
                    await self._release(q)

    async def _release(self, q: int) -> None:
        merge = self.merges.get(q)
        if merge is None or not len(merge):
            return
        ready = merge.ready()
        if not ready:
            return
        lowest = self._lowest(q)  # once per batch: a lower bound for every message in it
        for held in ready:
            event = held.event
            bind_current_event(event)
            raw = _raw(event)
            parsed, extra = held.item

            async def handle(parsed: Any, held: Held = held, extra: bytes | None = extra
                             ) -> None:
                try:
                    await self.handle(parsed, extra, held.partition, held.offset, lowest)
                finally:
                    for tables in ALL_TABLES:
                        tables.flush()

            await handle_with_retries(event.message, raw, parsed, service="detection",
                                      agent=self.agent, handle=handle, dlq=self.dlq)
            self._seen(q, held.partition).append((event.message.offset, held.offset))
            await self.stream.ack(event)

    def forget(self, revoked: Iterable[int]) -> None:
        for q in set(revoked):
            self.merges.pop(q, None)
            self.seen.pop(q, None)
            self.source_committed.pop(q, None)


async def _on_result(result: DrugCheckResultV1, partition: int, offset: int, raw: bytes
                     ) -> None:
    keys = await results_processor.on_result(result, partition, offset, novelty=False)
    by_partition: dict[int, list[str]] = {}
    for key in keys:
        by_partition.setdefault(through_partition(key, _S), []).append(key)
    for group in by_partition.values():
        await results_forwarder.forward(group[0], raw, partition, offset,
                                        [(SUBSTANCES, ",".join(group).encode())])
    results_forwarder.handled(partition, result.collected_at.timestamp())


async def _on_area_report(report: OverdoseReportV1, _extra: bytes | None, partition: int,
                          offset: int, lowest: Mapping[int, int]) -> None:
    area_processor.committed_reports = lowest
    await area_processor.on_report(report, partition, offset)


async def _on_substances(result: DrugCheckResultV1, extra: bytes | None, partition: int,
                         offset: int, lowest: Mapping[int, int]) -> None:
    substance_processor.committed_results = lowest
    keys = (extra or b"").decode().split(",")
    await substance_processor.on_novel(result, [k for k in keys if k], partition, offset)


reports_stage = _Reports()
ordered_results = _Ordered(DRUGCHECK_RESULTS.name, "contamination",
                           DrugCheckResultV1.model_validate_json,
                           lambda r: r.collected_at.timestamp(), _on_result, results_dlq)
area_stage = _Repartitioned(DETECTION_BY_AREA, "spikes", OVERDOSE_REPORTS.partitions,
                            OverdoseReportV1.model_validate_json,
                            lambda r: r.occurred_at.timestamp(), _on_area_report, reports_dlq)
substance_stage = _Repartitioned(DETECTION_BY_SUBSTANCE, "novelty",
                                 DRUGCHECK_RESULTS.partitions,
                                 DrugCheckResultV1.model_validate_json,
                                 lambda r: r.collected_at.timestamp(), _on_substances,
                                 results_dlq)


@app.agent(reports_topic)
async def reports(stream: Any) -> None:
    await reports_stage.run(stream.noack())


@app.agent(results_topic)
async def contamination(stream: Any) -> None:
    await ordered_results.run(stream.noack())


@app.agent(by_area_topic)
async def spikes(stream: Any) -> None:
    await area_stage.run(stream.noack())


@app.agent(by_substance_topic)
async def novelty(stream: Any) -> None:
    await substance_stage.run(stream.noack())


@app.timer(RELEASE_INTERVAL)
async def release_caught_up() -> None:
    await ordered_results.release()
    await area_stage.release()
    await substance_stage.release()


@app.timer(PUNCTUATE_INTERVAL)
async def punctuate() -> None:
    # Not under the merge's lock (a long release would hold every punctuation back):
    # `caught` counts what is being handled, and `newest` moves only once forwarded.
    await reports_forwarder.punctuate(reports_stage.caught)
    await results_forwarder.punctuate(ordered_results.caught)


async def forget_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
    def of(topic: str) -> list[int]:
        return [tp.partition for tp in revoked if tp.topic == topic]

    ordered_results.forget(of(DRUGCHECK_RESULTS.name))
    results_forwarder.forget(of(DRUGCHECK_RESULTS.name))
    reports_stage.forget(of(OVERDOSE_REPORTS.name))
    reports_forwarder.forget(of(OVERDOSE_REPORTS.name))
    area_stage.forget(of(DETECTION_BY_AREA.name))
    substance_stage.forget(of(DETECTION_BY_SUBSTANCE.name))
    # Keys may come back changed by another worker: read them from the tables again.
    for tables in ALL_TABLES:
        tables.clear_cache()
    for processor in (results_processor, area_processor, substance_processor):
        processor.forget_caches()


app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
