"""Several detection workers in one consumer group give the signals of one (issue 15), on
a real Tansu broker with real `lookout worker detection` processes: one recorded stream (the
first months of the Drug Checking BC export and synthetic overdose reports over four
counties of three states, each county over several postal codes) through 1, 2 and 3
workers, one spike level each (every level with every worker count is run in process by
`test_novelty.py`, which is cheap), and one of three workers killed mid-stream.

The reference is the processors over the same events in event-time order on in-memory
tables: what one worker gives (`test_worker.py`, `test_event_time.py`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
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
from tests.detection.helpers import reference_signals, states_and_bc_stream

START_WITHIN = 180.0  # first start of several workers on a busy 2-core machine


@functools.cache
def expected(level: str) -> dict[str, dict[str, Any]]:
    return reference_signals(states_and_bc_stream(), detection_spike_level=level)


def test_the_stream_raises_spikes_at_every_level_and_the_contamination_patterns() -> None:
    for level, areas in (("postal_code", 3), ("county", 3), ("state", 2)):
        want = expected(level)
        spiked = {s["region_id"] for s in want.values() if s["kind"] == "spike"}
        assert len(spiked) >= areas, (level, spiked)
    kinds = {s.get("pattern") for s in expected("county").values()}
    assert kinds >= {"unexpected_adulterant", "novel_substance", "rising_positivity"}, kinds


def _run(tmp_path: Path, level: str, count: int,
         during: Callable[[list[Worker], str, list[Event]], Awaitable[None]] | None = None
         ) -> dict[str, dict[str, Any]]:
    events = states_and_bc_stream()
    want = expected(level)
    env = {"LOOKOUT_DETECTION_SPIKE_LEVEL": level}
    with tansu() as bootstrap:
        workers = [Worker(bootstrap, tmp_path / f"var{i}", env) for i in range(count)]
        for w in workers:
            w.start()

        async def feed(_reader: SignalReader) -> None:
            if during is None:
                for i in range(0, len(events), 1000):  # a backfill, in batches
                    await produce(bootstrap, events[i:i + 1000])
            else:
                await during(workers, bootstrap, events)

        try:
            got = by_id(asyncio.run(signals_of(workers, feed, len(want),
                                               start_within=START_WITHIN, within=180,
                                               settle=1.5)))
        finally:
            for w in workers:
                w.stop()
        logs = "\n".join(w.log()[-2000:] for w in workers)
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    def brief(s: dict[str, Any]) -> str:
        return " ".join(str(s.get(k)) for k in ("kind", "pattern", "region_id", "substance_id",
                                                 "severity", "occurred_at", "window_start"))

    assert not missing and not extra, "\n".join([
        "missing:", *sorted(brief(want[i]) for i in missing), "extra:",
        *sorted(brief(got[i]) for i in extra), logs[-3000:]])
    assert got == want
    return got


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("workers", "level"), [(1, "postal_code"), (2, "state"),
                                                (3, "county")])
def test_one_two_and_three_workers_give_the_signals_of_one(
    tmp_path: Path, workers: int, level: str
) -> None:
    _run(tmp_path, level, workers)


@pytest.mark.timeout(600)  # three workers and a rebalance on a loaded 2-core machine
def test_one_of_three_workers_killed_mid_stream_loses_no_signal(tmp_path: Path) -> None:
    async def feed(workers: list[Worker], bootstrap: str, events: list[Event]) -> None:
        # the two others take its partitions over after the rebalance
        await kill_mid_feed(bootstrap, events, workers[1].kill, rate=600, within=60,
                            polls=150)

    _run(tmp_path, "county", 3, feed)
