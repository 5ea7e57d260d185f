"""Detection agents: overdose reports -> spike signals, drug-check results -> contamination
signals, over changelog-backed tables (see `processors` for the logic and table layout).

Tables use the key's partitioner (`use_partitioner`): a key written while handling messages
from several source partitions (a county gathers several ZIPs) always goes to one changelog
partition, so recovery after a crash restores its last value. One worker owns every
partition (see docs/detection.md, "Scaling").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from faust.types import TP
from pydantic import ValidationError

from services.detection.app import app
from services.detection.config import load_config
from services.detection.ordering import EventTimeMerge, Held
from services.detection.processors import Processor, Tables
from services.detection.tablecache import WriteBehind
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.faust_patches import bind_current_event, committed_offset
from shared.settings import get_settings
from shared.streams import dead_letter, handle_with_retries
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SIGNALS, Topic

log = logging.getLogger(__name__)
RELEASE_INTERVAL = 0.2  # s between checks for held messages a caught-up partition freed


def _raw_topic(name: str, partitions: int) -> Any:
    return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions)


results_topic = _raw_topic(DRUGCHECK_RESULTS.name, DRUGCHECK_RESULTS.partitions)
results_dlq = _raw_topic(DRUGCHECK_RESULTS.dlq, DRUGCHECK_RESULTS.partitions)
reports_topic = _raw_topic(OVERDOSE_REPORTS.name, OVERDOSE_REPORTS.partitions)
reports_dlq = _raw_topic(OVERDOSE_REPORTS.dlq, OVERDOSE_REPORTS.partitions)
signals_topic = _raw_topic(SIGNALS.name, SIGNALS.partitions)


def _table(name: str, help_: str, partitions: int = DRUGCHECK_RESULTS.partitions
           ) -> WriteBehind:
    return WriteBehind(app.Table(name, partitions=partitions, use_partitioner=True,
                                 key_type=str, help=help_))


tables = Tables(
    spike_counts=_table("spike-areas", "overdose reports per area: counts per event-time bucket",
                        OVERDOSE_REPORTS.partitions),
    marks=_table("marks", "newest event-time day per region (contamination)"),
    episodes=_table("episodes", "open signal per (region, kind, substance)"),
    seen=_table("substances-seen", "last time each substance was seen per region"),
    clusters=_table("clusters", "recent high-risk results per (region, substance)"),
    positivity=_table("positivity", "samples and positives per region, substance and day"),
)


async def _send(key: str, payload: str) -> None:
    await signals_topic.send(key=key.encode(), value=payload.encode())


processor = Processor(load_config(get_settings()), tables, _send)


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


class _Ordered:
    """One agent's source topic consumed in event-time order (`ordering.EventTimeMerge`):
    messages are held, handled when no partition of this worker can still bring an older
    one, and acknowledged in offset order once handled."""

    def __init__(self, topic: str, agent: str, parse: Callable[[bytes], Any],
                 at: Callable[[Any], float], handle: Callable[[Any, int, int], Awaitable[None]],
                 dlq: Any) -> None:
        self.topic, self.agent, self.parse, self.at = topic, agent, parse, at
        self.handle, self.dlq = handle, dlq
        self.merge = EventTimeMerge()
        self.lock = asyncio.Lock()
        self.stream: Any = None

    def partitions(self) -> list[int]:
        return [tp.partition for tp in app.consumer.assignment() if tp.topic == self.topic]

    def caught_up(self, partition: int, next_offset: int | None) -> bool:
        tp = TP(self.topic, partition)
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # not fetched yet
            return False
        if highwater is None:
            return False
        if next_offset is None:
            next_offset = committed_offset(app.consumer, tp) or 0
        return next_offset >= highwater

    async def run(self, stream: Any) -> None:
        self.stream = stream
        async for event in stream.events():
            raw: bytes = event.value if isinstance(event.value, bytes) else \
                bytes(event.value or b"")
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
        for held in self.merge.ready(self.partitions(), self.caught_up):
            event = held.event
            if held.item is not None:
                bind_current_event(event)  # table writes and sends belong to it
                raw = event.value if isinstance(event.value, bytes) else \
                    bytes(event.value or b"")

                async def handle(parsed: Any, held: Held = held) -> None:
                    try:
                        await self.handle(parsed, held.partition, held.offset)
                    finally:
                        tables.flush()

                await handle_with_retries(event.message, raw, held.item, service="detection",
                                          agent=self.agent, handle=handle, dlq=self.dlq)
            if event is not None:
                await self.stream.ack(event)

    def forget(self, revoked: set[TP]) -> None:
        self.merge.forget(tp.partition for tp in revoked if tp.topic == self.topic)


ordered_results = _Ordered(DRUGCHECK_RESULTS.name, "contamination",
                           DrugCheckResultV1.model_validate_json,
                           lambda r: r.collected_at.timestamp(), processor.on_result,
                           results_dlq)
ordered_reports = _Ordered(OVERDOSE_REPORTS.name, "spikes",
                           OverdoseReportV1.model_validate_json,
                           lambda r: r.occurred_at.timestamp(), processor.on_report,
                           reports_dlq)


@app.agent(results_topic)
async def contamination(stream: Any) -> None:
    await ordered_results.run(stream.noack())


@app.agent(reports_topic)
async def spikes(stream: Any) -> None:
    await ordered_reports.run(stream.noack())


@app.timer(RELEASE_INTERVAL)
async def release_caught_up() -> None:
    await ordered_results.release()
    await ordered_reports.release()


async def forget_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
    ordered_results.forget(revoked)
    ordered_reports.forget(revoked)


app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
