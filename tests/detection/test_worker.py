"""The detection worker as a real process (`lookout worker detection`) on a real Tansu
broker: dead letters, replay determinism, and kill -9 with table recovery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.detection.config import load_config
from services.detection.processors import Processor
from services.detection.tables import Tables
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS
from testing.detection_worker import (
    SignalReader,
    Worker,
    committed,
    produce,
    send_raw,
    tansu,
)
from tests.detection.helpers import every_pattern_stream

START_WITHIN = 90.0  # first start on a busy 2-core machine

Event = OverdoseReportV1 | DrugCheckResultV1


def expected(events: list[Event]) -> dict[str, dict[str, Any]]:
    """The signals the same logic gives on in-memory tables, by event id."""
    sent: list[dict[str, Any]] = []

    async def send(key: str, payload: str) -> None:
        sent.append(json.loads(payload))

    processor = Processor(load_config(Settings(env="test")), Tables.in_memory(), send)

    async def go() -> None:
        for offset, event in enumerate(events):
            if isinstance(event, OverdoseReportV1):
                await processor.on_report(event, 0, offset)
            else:
                await processor.on_result(event, 0, offset)

    asyncio.run(go())
    return {s["event_id"]: s for s in sent}


@pytest.fixture
def broker() -> Iterator[str]:
    with tansu() as bootstrap:
        yield bootstrap


async def _wait_started(worker: Worker, reader: SignalReader, topic: str) -> None:
    """A malformed message reaches the topic's DLQ: the agent is consuming."""
    marker = f"not json {topic}".encode()
    await send_raw(worker.bootstrap, topic, marker, b"garbage")
    ok = await reader.wait_for(
        lambda r: not worker.alive() or any(v == marker for _, v, _ in r.records),
        START_WITHIN)
    assert worker.alive(), worker.log()[-3000:]
    assert ok, f"no dead letter from {topic} within {START_WITHIN}s\n{worker.log()[-3000:]}"


def _by_id(signals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in signals:
        if s["event_id"] in out:
            assert out[s["event_id"]] == s, "a duplicate signal id with different content"
        out[s["event_id"]] = s
    return out


def run_once(bootstrap: str, var_dir: Path, events: list[Event], want: int) -> list[Any]:
    worker = Worker(bootstrap, var_dir)
    worker.start()

    async def go() -> list[Any]:
        reader = SignalReader(bootstrap, ("signals.v1", OVERDOSE_REPORTS.dlq,
                                          DRUGCHECK_RESULTS.dlq))
        await reader.start()
        try:
            await _wait_started(worker, reader, OVERDOSE_REPORTS.name)
            await _wait_started(worker, reader, DRUGCHECK_RESULTS.name)
            await produce(bootstrap, events)
            await reader.wait_for(lambda r: len(_by_id(r.signals())) >= want, 60)
            await asyncio.sleep(1.0)  # nothing more should come
            return reader.signals()
        finally:
            await reader.stop()

    try:
        return asyncio.run(go())
    finally:
        worker.stop()


def test_undecodable_events_are_dead_lettered_and_the_agents_keep_running(
    broker: str, tmp_path: Path
) -> None:
    # run_once first dead-letters one malformed message per input topic, then counts on
    # the agents to handle the whole stream.
    events = every_pattern_stream()
    want = expected(events)
    signals = run_once(broker, tmp_path / "var", events, len(want))
    assert set(_by_id(signals)) == set(want)


def test_replaying_the_same_input_through_fresh_workers_gives_the_same_signals(
    tmp_path: Path
) -> None:
    events = every_pattern_stream()
    want = expected(events)
    runs = []
    for i in range(2):
        with tansu() as bootstrap:
            runs.append(_by_id(run_once(bootstrap, tmp_path / f"var{i}", events, len(want))))
    assert runs[0] == runs[1] == want
    assert {s.get("pattern", s["kind"]) for s in want.values()} == {
        "spike", "unexpected_adulterant", "novel_substance", "multi_site_cluster",
        "rising_positivity"}


def test_a_worker_killed_mid_stream_recovers_its_tables_and_loses_no_signal(
    broker: str, tmp_path: Path
) -> None:
    events = every_pattern_stream()
    want = expected(events)
    worker = Worker(broker, tmp_path / "var")
    worker.start()
    half = len(events) // 2

    async def go() -> list[Any]:
        reader = SignalReader(broker, ("signals.v1", OVERDOSE_REPORTS.dlq,
                                       DRUGCHECK_RESULTS.dlq))
        await reader.start()
        try:
            await _wait_started(worker, reader, OVERDOSE_REPORTS.name)
            await _wait_started(worker, reader, DRUGCHECK_RESULTS.name)
            await produce(broker, events[:half])
            # Wait until most of the first half is committed: the restart must resume from
            # the committed offsets with the tables recovered, not replay from zero.
            topics = (OVERDOSE_REPORTS.name, DRUGCHECK_RESULTS.name)
            for _ in range(100):
                if await committed(broker, topics) >= half // 2:
                    break
                await asyncio.sleep(0.2)
            assert await committed(broker, topics) >= half // 2
            # Kill it while it handles the second half, which keeps arriving meanwhile.
            sent = 0
            quarter = asyncio.Event()

            def count(_event: Event, _at: float) -> None:
                nonlocal sent
                sent += 1
                if sent >= (len(events) - half) // 4:
                    quarter.set()

            feeding = asyncio.create_task(produce(broker, events[half:], rate=400,
                                                  on_sent=count))
            await asyncio.wait_for(quarter.wait(), 30)
            worker.kill()
            before = len(reader.signals())
            await feeding
            worker.start()
            await reader.wait_for(lambda r: len(_by_id(r.signals())) >= len(want), 90)
            await asyncio.sleep(1.0)
            assert before < len(want)
            return reader.signals()
        finally:
            await reader.stop()

    try:
        signals = asyncio.run(go())
    finally:
        worker.stop()
    got = _by_id(signals)
    assert set(got) == set(want), worker.log()[-3000:]
    assert got == want  # same content: the spikes after the restart saw the old counts
