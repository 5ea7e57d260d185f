"""Event time, not arrival order: an area's postal codes arrive on several partitions,
consumed at different paces; the signals must not depend on how they interleave."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from services.detection.ordering import EventTimeMerge, Held
from shared.events import DrugCheckResultV1, OverdoseReportV1
from testing.detection_worker import Event, SignalReader, Worker, by_id, produce, signals_of, tansu
from tests.detection.helpers import (
    COUNTY_ZIPS,
    county_history,
    event_time,
    every_pattern_stream,
    reference_signals,
)

COUNTY = {"LOOKOUT_DETECTION_SPIKE_LEVEL": "county"}
START_WITHIN = 180.0  # first start on a busy 2-core machine (load 20 seen)


# ------------------------------------------------------------------ the merge, in process

def test_the_merge_releases_every_interleaving_of_partitions_in_event_time_order() -> None:
    rng = random.Random(7)
    partitions = {p: sorted(rng.uniform(0, 1000) for _ in range(200)) for p in range(4)}
    want = sorted((at, f"{p}-{i}") for p, times in partitions.items()
                  for i, at in enumerate(times))
    for trial in range(20):
        merge = EventTimeMerge()
        cursor = dict.fromkeys(partitions, 0)
        released: list[tuple[float, str]] = []
        acked: dict[int, list[int]] = {p: [] for p in partitions}

        def caught_up(p: int, nxt: int | None) -> bool:
            return (nxt or 0) >= len(partitions[p])  # every record of p was received

        while any(cursor[p] < len(partitions[p]) for p in partitions):
            # one partition at a time, a random run of its records (a fetch)
            p = rng.choice([q for q in partitions if cursor[q] < len(partitions[q])])
            for _ in range(rng.randint(1, 60 if trial % 2 else 3)):
                if cursor[p] == len(partitions[p]):
                    break
                i = cursor[p]
                merge.add(Held(partitions[p][i], f"{p}-{i}", p, i, None))
                cursor[p] += 1
                for held in merge.ready(partitions, caught_up):
                    released.append((held.at, held.tiebreak))
                    acked[held.partition].append(held.offset)
        assert released == want
        assert len(merge) == 0
        for p, offsets in acked.items():
            assert offsets == list(range(len(partitions[p])))  # in order, every one


def test_a_partition_s_messages_come_out_in_its_offset_order() -> None:
    """Events of the same time (the BC export has dates only), or an older one behind a
    newer one, keep their partition's order: the processors' offset marks rely on it."""
    merge = EventTimeMerge()
    for offset, (at, event_id) in enumerate([(5.0, "z"), (5.0, "a"), (3.0, "b"), (9.0, "c")]):
        merge.add(Held(at, event_id, 0, offset, None))
    merge.add(Held(5.0, "m", 1, 0, None))
    merge.add(Held(4.0, "m", 1, 0, None))  # received already: ignored
    out = merge.ready([0, 1], lambda p, n: True)
    assert [(h.partition, h.offset) for h in out] == [(1, 0), (0, 0), (0, 1), (0, 2), (0, 3)]


def test_a_partition_behind_holds_back_newer_messages_of_the_others() -> None:
    merge = EventTimeMerge()
    lag = {0: True, 1: True}

    def caught_up(p: int, nxt: int | None) -> bool:
        return not lag[p]

    def ready() -> list[str]:
        return [h.tiebreak for h in merge.ready([0, 1], caught_up)]

    merge.add(Held(500.0, "a", 0, 0, None))
    merge.add(Held(10.0, "b", 1, 0, None))
    assert ready() == ["b"]
    merge.add(Held(20.0, "c", 1, 1, None))
    assert ready() == ["c"]  # 500 still held: partition 1 may bring older ones
    lag[1] = False  # partition 1 has nothing more: it holds nothing back
    assert ready() == ["a"]
    # a message skipped (undecodable) is acknowledged in its turn, after the ones before it
    merge.add(Held(600.0, "d", 0, 1, "d"))
    merge.skip(0, 2)
    out = merge.ready([0, 1], lambda p, n: True)
    assert [(h.offset, h.item) for h in out] == [(1, "d"), (2, None)]
    # memory is bounded: beyond `held_max` the oldest heads go even while a partition lags
    small = EventTimeMerge(held_max=2)
    for offset in range(4):
        small.add(Held(100.0 + offset, "x", 0, offset, None))
    assert [h.offset for h in small.ready([0, 1], lambda p, n: p == 0)] == [0, 1]
    assert len(small) == 2


# ------------------------------------------------------------------ the worker, on Tansu

def shifted(events: list[Event], days: int, regions: dict[str, str]) -> list[Event]:
    """The same events `days` later, in other regions, with their own ids."""
    out: list[Event] = []
    for e in events:
        update: dict[str, Any] = {
            "event_id": uuid.uuid5(e.event_id, "shifted"),
            "region_id": regions.get(e.region_id, e.region_id)}
        if isinstance(e, OverdoseReportV1):
            update["occurred_at"] = e.occurred_at + timedelta(days=days)
        else:
            update["collected_at"] = e.collected_at + timedelta(days=days)
        out.append(e.model_copy(update=update))
    return out


def test_a_history_sent_as_batches_gives_the_signals_of_the_same_reports_one_by_one(
    tmp_path: Path
) -> None:
    """A county's history over eight ZIP codes (and a drug-checking site's five weeks) is
    sent one by one, each acknowledged before the next; then the same history, 100 days
    later in another county, as batches of 1,000 (a backfill, or the relay draining a
    backlog): partitions then run weeks apart. Both give exactly the signals (ids and
    bodies) of the events handled in event-time order, and no report is late."""
    one_by_one: list[Event] = [*county_history(),
                               *[e for e in every_pattern_stream()
                                 if isinstance(e, DrugCheckResultV1)]]
    one_by_one.sort(key=lambda e: (event_time(e), str(e.event_id)))
    batches = shifted(one_by_one, 100, {z: z.replace("king-county/981", "pierce-county/983")
                                        for z in COUNTY_ZIPS})
    want = reference_signals([*one_by_one, *batches], detection_spike_level="county")
    kinds = [s.get("pattern", s["kind"]) for s in want.values()]
    assert kinds.count("spike") >= 8 and "rising_positivity" in kinds
    assert {s["region_id"] for s in want.values() if s["kind"] == "spike"} == {
        "us/wa/king-county", "us/wa/pierce-county"}

    with tansu() as bootstrap:
        worker = Worker(bootstrap, tmp_path / "var", COUNTY)
        worker.start()

        async def feed(_reader: SignalReader) -> None:
            await produce(bootstrap, one_by_one, on_sent=lambda _e, _t: None)
            for i in range(0, len(batches), 1000):
                await produce(bootstrap, batches[i:i + 1000])

        try:
            got = by_id(asyncio.run(signals_of([worker], feed, len(want),
                                               start_within=START_WITHIN, within=120,
                                               settle=1.5)))
        finally:
            worker.stop()
        log = worker.log()
    assert "late report" not in log and "late result" not in log, log[-3000:]
    assert got == want
