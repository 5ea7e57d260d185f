"""Detection agents: overdose reports -> spike signals, drug-check results -> contamination
signals, over changelog-backed tables (see `processors` for the logic and table layout).

Tables use the key's partitioner (`use_partitioner`): a key written while handling messages
from several source partitions (a county gathers several ZIPs) always goes to one changelog
partition, so recovery after a crash restores its last value. One worker owns every
partition (see docs/detection.md, "Scaling").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import faust
from faust.types import TP

from services.detection.app import app
from services.detection.config import load_config
from services.detection.processors import Processor, Tables
from services.detection.tablecache import WriteBehind
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.settings import get_settings
from shared.streams import process_each
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SIGNALS

log = logging.getLogger(__name__)


def _raw_topic(name: str, partitions: int) -> Any:
    return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions)


results_topic = _raw_topic(DRUGCHECK_RESULTS.name, DRUGCHECK_RESULTS.partitions)
results_dlq = _raw_topic(DRUGCHECK_RESULTS.dlq, DRUGCHECK_RESULTS.partitions)
reports_topic = _raw_topic(OVERDOSE_REPORTS.name, OVERDOSE_REPORTS.partitions)
reports_dlq = _raw_topic(OVERDOSE_REPORTS.dlq, OVERDOSE_REPORTS.partitions)
signals_topic = _raw_topic(SIGNALS.name, SIGNALS.partitions)


def _table(name: str, help_: str) -> WriteBehind:
    return WriteBehind(app.Table(name, partitions=4, use_partitioner=True, key_type=str,
                                 help=help_))


tables = Tables(
    spike_counts=_table("spike-areas", "overdose reports per area: counts per event-time bucket"),
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

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __getitem__(self, partition: int) -> int | None:
        offsets = getattr(app.consumer, "_committed_offset", {})
        return offsets.get(TP(self.topic, partition))

    def __iter__(self) -> Iterator[int]:
        return iter(range(4))

    def __len__(self) -> int:
        return 4


processor.committed_reports = _Committed(OVERDOSE_REPORTS.name)
processor.committed_results = _Committed(DRUGCHECK_RESULTS.name)


def _position() -> tuple[int, int]:
    event = faust.current_event()
    if event is None:
        raise RuntimeError("no current event")
    return event.message.partition, event.message.offset


async def handle_result(result: DrugCheckResultV1) -> None:
    try:
        await processor.on_result(result, *_position())
    finally:
        tables.flush()


async def handle_report(report: OverdoseReportV1) -> None:
    try:
        await processor.on_report(report, *_position())
    finally:
        tables.flush()


@app.agent(results_topic)
async def contamination(stream: Any) -> None:
    await process_each(
        stream, service="detection", agent="contamination",
        parse=DrugCheckResultV1.model_validate_json, handle=handle_result, dlq=results_dlq,
    )


@app.agent(reports_topic)
async def spikes(stream: Any) -> None:
    await process_each(
        stream, service="detection", agent="spikes",
        parse=OverdoseReportV1.model_validate_json, handle=handle_report, dlq=reports_dlq,
    )
