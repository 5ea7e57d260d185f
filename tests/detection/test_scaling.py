"""Several detection workers in one consumer group give the signals of one (issue 15), on
a real Tansu broker with real `lookout worker detection` processes: one recorded stream (the
first months of the Drug Checking BC export and synthetic overdose reports over three
counties of two states, each county over four postal codes spread over the partitions)
through 1, 2 and 3 workers at each spike level, and one of three workers killed mid-stream.

The reference is the processors over the same events in event-time order on in-memory
tables: what one worker gives (`test_worker.py`, `test_event_time.py`)."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.detection.config import load_config
from services.detection.processors import Processor, Tables
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS
from testing.detection_worker import SignalReader, Worker, committed, produce, send_raw, tansu
from tests.detection.helpers import report

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "drugcheckingbc-2018-2020.csv"
START_WITHIN = 180.0  # first start of several workers on a busy 2-core machine
BC_RESULTS = 1500  # the export's first results in time order (2018-06 to 2018-10)
COUNTIES = {
    "us/wa/king-county": ["98101", "98102", "98103", "98104"],
    "us/wa/pierce-county": ["98402", "98403", "98404", "98405"],
    "us/or/multnomah-county": ["97201", "97202", "97203", "97204"],
}
T0 = datetime(2018, 6, 1, tzinfo=UTC)

Event = OverdoseReportV1 | DrugCheckResultV1


def _at(event: Event) -> datetime:
    return event.occurred_at if isinstance(event, OverdoseReportV1) else event.collected_at


def overdose_reports(days: int = 75, seed: int = 15) -> list[OverdoseReportV1]:
    """Zero to three reports a day per postal code at distinct minutes, and spikes: a whole
    county on some days, one postal code on others, the whole state on one."""
    rng = random.Random(seed)
    spikes: dict[int, tuple[str, str | None]] = {
        40: ("us/wa/king-county", None), 47: ("us/wa/pierce-county", "98403"),
        52: ("us/or/multnomah-county", None), 58: ("us/wa", None),
        63: ("us/wa/king-county", "98104"), 70: ("us/or/multnomah-county", "97202")}
    out: list[OverdoseReportV1] = []
    n = 0
    for day in range(days):
        for county, zips in COUNTIES.items():
            for z in zips:
                count = rng.randint(0, 2)
                where, one = spikes.get(day, ("", None))
                if county.startswith(where) and where and one in (None, z):
                    count += 5 if one is None else 14
                for minute in rng.sample(range(1440), count):
                    at = T0 + timedelta(days=day, minutes=minute, seconds=rng.randint(0, 59))
                    out.append(report(50_000 + n, at, f"{county}/{z}"))
                    n += 1
    return out


def bc_results(n: int = BC_RESULTS) -> list[DrugCheckResultV1]:
    """The export's first `n` results in time order, as ingest makes them (fixed ids)."""
    from services.ingest.csv_import import parse_csv
    from services.ingest.service import build_result_event

    lines = DATA.read_text(encoding="utf-8").splitlines()
    # the file is newest first: its header and last rows are the oldest results
    _fmt, rows = parse_csv("\n".join([lines[0], *lines[-(n + 200):]]) + "\n")
    bodies = [row.body for row in rows if row.body is not None]
    bodies.reverse()  # the file is newest first
    bodies.sort(key=lambda b: b.collected_at)
    ns = uuid.UUID("8d5b3c1e-4f6a-4e2b-9c7d-15a0c0ffee15")
    return [build_result_event(b, uuid.uuid5(ns, f"site-{b.collection_site}"),
                               uuid.uuid5(ns, f"result-{i}"), uuid.uuid5(ns, f"event-{i}"))
            for i, b in enumerate(bodies[:n])]


@functools.cache
def stream() -> list[Event]:
    events: list[Event] = [*overdose_reports(), *bc_results()]
    events.sort(key=lambda e: (_at(e), str(e.event_id)))
    return events


@functools.cache
def expected(level: str) -> dict[str, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(key: str, payload: str) -> None:
        sent.append(json.loads(payload))

    processor = Processor(load_config(Settings(env="test", detection_spike_level=level)),
                          Tables.in_memory(), send)

    async def go() -> None:
        for offset, event in enumerate(stream()):
            if isinstance(event, OverdoseReportV1):
                await processor.on_report(event, 0, offset)
            else:
                await processor.on_result(event, 0, offset)

    asyncio.run(go())
    return {s["event_id"]: s for s in sent}


def by_id(signals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in signals:
        if s["event_id"] in out:
            assert out[s["event_id"]] == s, "a duplicate signal id with different content"
        out[s["event_id"]] = s
    return out


def test_the_stream_raises_spikes_in_every_county_and_every_contamination_pattern() -> None:
    for level, areas in (("postal_code", 4), ("county", 3), ("state", 2)):
        want = expected(level)
        spiked = {s["region_id"] for s in want.values() if s["kind"] == "spike"}
        assert len(spiked) >= areas, (level, spiked)
    kinds = {s.get("pattern") for s in expected("county").values()}
    assert kinds >= {"unexpected_adulterant", "novel_substance", "rising_positivity"}, kinds


async def _wait_started(workers: list[Worker], reader: SignalReader, topic: str) -> None:
    """A malformed message reaches the topic's DLQ: the group consumes it."""
    marker = f"not json {topic} {uuid.uuid4()}".encode()
    await send_raw(workers[0].bootstrap, topic, marker, b"garbage")
    ok = await reader.wait_for(
        lambda r: not all(w.alive() for w in workers)
        or any(v == marker for _, v, _ in r.records), START_WITHIN)
    for w in workers:
        assert w.alive(), w.log()[-3000:]
    assert ok, f"no dead letter from {topic} within {START_WITHIN}s"


def _run(tmp_path: Path, level: str, count: int,
         during: Callable[[list[Worker], str, list[Event]], Any] | None = None
         ) -> dict[str, dict[str, Any]]:
    events = stream()
    want = expected(level)
    env = {"LOOKOUT_DETECTION_SPIKE_LEVEL": level}
    with tansu() as bootstrap:
        workers = [Worker(bootstrap, tmp_path / f"var{i}", env) for i in range(count)]
        for w in workers:
            w.start()

        async def go() -> list[dict[str, Any]]:
            reader = SignalReader(bootstrap, ("signals.v1", OVERDOSE_REPORTS.dlq,
                                              DRUGCHECK_RESULTS.dlq))
            await reader.start()
            try:
                await _wait_started(workers, reader, OVERDOSE_REPORTS.name)
                await _wait_started(workers, reader, DRUGCHECK_RESULTS.name)
                if during is None:
                    for i in range(0, len(events), 1000):  # a backfill, in batches
                        await produce(bootstrap, events[i:i + 1000])
                else:
                    await during(workers, bootstrap, events)
                await reader.wait_for(lambda r: len(by_id(r.signals())) >= len(want), 180)
                await asyncio.sleep(1.5)  # nothing more should come
                return reader.signals()
            finally:
                await reader.stop()

        try:
            got = by_id(asyncio.run(go()))
        finally:
            for w in workers:
                w.stop()
        logs = "\n".join(w.log()[-2000:] for w in workers)
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    assert not missing and not extra, (len(missing), len(extra), logs)
    assert got == want
    return got


@pytest.mark.timeout(600)
@pytest.mark.parametrize("level", ["postal_code", "county", "state"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_one_two_and_three_workers_give_the_signals_of_one(
    tmp_path: Path, level: str, workers: int
) -> None:
    _run(tmp_path, level, workers)


@pytest.mark.timeout(600)  # three workers and a rebalance on a loaded 2-core machine
@pytest.mark.xfail(reason="known gap (docs/detection.md, Scaling): a second-stage message "
                   "redelivered after the kill reads keys fed by several source partitions "
                   "(a county, a substance seen anywhere) with the later writes of the other "
                   "partitions in them; measured 2026-12-02: 54 signals missing, 23 different",
                   strict=False)
def test_one_of_three_workers_killed_mid_stream_loses_no_signal(tmp_path: Path) -> None:
    async def feed(workers: list[Worker], bootstrap: str, events: list[Event]) -> None:
        half = len(events) // 2
        await produce(bootstrap, events[:half])
        topics = (OVERDOSE_REPORTS.name, DRUGCHECK_RESULTS.name)
        for _ in range(150):  # most of the first half committed: a restart resumes there
            if await committed(bootstrap, topics) >= half // 2:
                break
            await asyncio.sleep(0.2)
        sent = 0
        quarter = asyncio.Event()

        def count(_event: Event, _at: float) -> None:
            nonlocal sent
            sent += 1
            if sent >= (len(events) - half) // 4:
                quarter.set()

        feeding = asyncio.create_task(produce(bootstrap, events[half:], rate=600,
                                              on_sent=count))
        await asyncio.wait_for(quarter.wait(), 60)
        workers[1].kill()  # the two others take its partitions over after the rebalance
        await feeding

    _run(tmp_path, "county", 3, feed)
