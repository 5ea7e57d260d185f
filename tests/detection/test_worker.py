"""The detection worker as a real process (`lookout worker detection`) on a real Tansu
broker: dead letters, replay determinism, and kill -9 with table recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.detection_worker import (
    Event,
    SignalReader,
    Worker,
    by_id,
    kill_mid_feed,
    produce,
    signals_of,
    tansu,
)
from tests.detection.helpers import every_pattern_stream, reference_signals

START_WITHIN = 90.0  # first start on a busy 2-core machine


@pytest.fixture
def broker() -> Iterator[str]:
    with tansu() as bootstrap:
        yield bootstrap


def run_once(bootstrap: str, var_dir: Path, events: list[Event], want: int) -> list[Any]:
    worker = Worker(bootstrap, var_dir)
    worker.start()

    async def feed(_reader: SignalReader) -> None:
        await produce(bootstrap, events)

    try:
        return asyncio.run(signals_of([worker], feed, want, start_within=START_WITHIN,
                                      within=60, settle=1.0))
    finally:
        worker.stop()


def test_undecodable_events_are_dead_lettered_and_the_agents_keep_running(
    broker: str, tmp_path: Path
) -> None:
    # run_once first dead-letters one malformed message per input topic, then counts on
    # the agents to handle the whole stream.
    events = every_pattern_stream()
    want = reference_signals(events)
    signals = run_once(broker, tmp_path / "var", events, len(want))
    assert set(by_id(signals)) == set(want)


def test_replaying_the_same_input_through_fresh_workers_gives_the_same_signals(
    tmp_path: Path
) -> None:
    events = every_pattern_stream()
    want = reference_signals(events)
    runs = []
    for i in range(2):
        with tansu() as bootstrap:
            runs.append(by_id(run_once(bootstrap, tmp_path / f"var{i}", events, len(want))))
    assert runs[0] == runs[1] == want
    assert {s.get("pattern", s["kind"]) for s in want.values()} == {
        "spike", "unexpected_adulterant", "novel_substance", "multi_site_cluster",
        "rising_positivity"}


def test_a_worker_killed_mid_stream_recovers_its_tables_and_loses_no_signal(
    broker: str, tmp_path: Path
) -> None:
    events = every_pattern_stream()
    want = reference_signals(events)
    worker = Worker(broker, tmp_path / "var")
    worker.start()
    done = 0
    before = 0

    async def feed(reader: SignalReader) -> None:
        nonlocal done
        # Kill it while it handles the second half, which keeps arriving meanwhile; then
        # start it again: it must resume from the committed offsets, its tables recovered.
        def kill() -> None:
            nonlocal before
            worker.kill()
            before = len(reader.signals())

        done = await kill_mid_feed(broker, events, kill, rate=400, within=30, polls=100)
        worker.start()

    try:
        signals = asyncio.run(signals_of([worker], feed, len(want), start_within=START_WITHIN,
                                         within=90, settle=1.0))
    finally:
        worker.stop()
    assert done >= len(events) // 2 // 2  # most of the first half committed before the kill
    assert before < len(want)
    got = by_id(signals)
    assert set(got) == set(want), worker.log()[-3000:]
    assert got == want  # same content: the spikes after the restart saw the old counts
