"""N workers, in process: the partition key rule, the novelty stage's release rule, and the
processors over many source partitions handled in any interleaving (each partition in its
order, as workers in one group handle them) with the novelty stage deciding "never seen
anywhere": the signals of one processor over the events in time order."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from collections import deque
from typing import Any

import pytest

from services.detection.config import load_config
from services.detection.novelty import Candidate, Partition
from services.detection.processors import Processor
from services.detection.tables import Tables
from shared.events import OverdoseReportV1
from shared.kafka import CachedPartitioner
from shared.partition_keys import drug_check_result_key, overdose_report_key, state_of
from shared.settings import Settings
from testing.detection_worker import Event, by_id
from tests.detection.helpers import event_time, reference_signals, states_and_bc_stream


def test_reports_are_keyed_by_state_so_every_spike_area_lives_in_one_partition() -> None:
    assert state_of("us/wa/king-county/98104") == "us/wa"
    assert state_of("us/wa") == "us/wa"
    assert state_of("us") == "us"
    assert overdose_report_key("us/wa/king-county/98104") == "us/wa"
    assert drug_check_result_key("ca/bc/vancouver") == "ca/bc/vancouver"
    config = load_config(Settings(env="test"))
    for level in (2, 3, 4):  # state, county, postal code
        area = "/".join("us/wa/king-county/98104".split("/")[:level])
        assert area.startswith(overdose_report_key("us/wa/king-county/98104"))
    assert config.area_of("us/wa/king-county/98104").startswith("us/wa")


def _candidate(at: float, event_id: str, source: int, substance: str = "fentanyl"
               ) -> Candidate:
    return Candidate(substance, at, event_id, source, 0, "r", f"first {event_id}",
                     f"other {event_id}")


def test_a_candidate_waits_until_no_other_source_can_still_bring_an_earlier_one() -> None:
    part = Partition(sources=3)
    first: dict[str, tuple[float, str]] = {}

    def released() -> list[tuple[str, bool]]:
        out = part.ready(first.get)
        for c, is_first in out:
            if is_first:
                first[c.substance] = c.order
        return [(c.event_id, is_first) for c, is_first in out]

    part.report(1, None, True)  # caught up, but before the candidate: it does not count
    part.add(_candidate(10.0, "b", source=0))
    part.report(2, (20.0, "x"), False)  # past it
    assert released() == []  # source 1 said "caught up" before the candidate came
    part.report(1, (5.0, "y"), False)  # behind it, not caught up
    assert released() == []
    part.add(_candidate(10.0, "a", source=1))  # same time, smaller id: the first
    part.report(1, (11.0, "z"), False)
    assert released() == [("a", True), ("b", False)]
    # once decided, a later candidate (or a late older one) is "not first" at once
    part.add(_candidate(3.0, "c", source=2))
    assert released() == [("c", False)]
    # a caught-up report that arrives after the candidate lets it go
    part.add(_candidate(50.0, "d", source=0, substance="heroin"))
    part.report(1, None, True)
    assert released() == []
    part.report(2, None, True)
    assert released() == [("d", True)]


def test_a_source_bound_never_moves_back_when_a_new_owner_handles_old_results_again() -> None:
    part = Partition(sources=2)
    part.report(1, (30.0, "m"), False)
    part.report(1, (12.0, "k"), False)  # the partition's new owner, redelivered results
    part.add(_candidate(20.0, "a", source=0))
    assert [(c.event_id, f) for c, f in part.ready(lambda s: None)] == [("a", True)]


# ------------------------------------------------------------------ processors, in process

def partitioned(events: list[Event], partitions: int) -> dict[tuple[str, int], deque[Event]]:
    """Each event on its topic's partition by its key (the producers' partitioner)."""
    partitioner = CachedPartitioner()
    out: dict[tuple[str, int], deque[Event]] = {}
    for e in events:
        if isinstance(e, OverdoseReportV1):
            topic, key = "reports", overdose_report_key(e.region_id)
        else:
            topic, key = "results", drug_check_result_key(e.region_id)
        p = partitioner(key.encode(), list(range(partitions)), list(range(partitions)))
        out.setdefault((topic, p), deque()).append(e)
    return out


def interleaved(events: list[Event], level: str, partitions: int, seed: int
                ) -> dict[str, dict[str, Any]]:
    """Every source partition handled in its own order, partitions interleaved at random
    (runs of 1 to 60 messages), a novelty stage of two partitions fed the forwards and
    every results partition's bound after each message it handles."""
    rng = random.Random(seed)
    queues = partitioned(events, partitions)
    sent: list[dict[str, Any]] = []
    stage = {k: Partition(sources=partitions) for k in range(2)}
    first: dict[str, tuple[float, str]] = {}

    async def send(key: str, payload: str) -> None:
        sent.append(json.loads(payload))

    async def forward(substance: str, value: dict[str, Any]) -> None:
        stage[zlib.crc32(substance.encode()) % 2].add(Candidate.from_json(substance, value))

    def release() -> None:
        for part in stage.values():
            for c, is_first in part.ready(first.get):
                if is_first:
                    first.setdefault(c.substance, c.order)
                sent.append(json.loads(c.first if is_first else c.other))

    processor = Processor(load_config(Settings(env="test", detection_spike_level=level)),
                          Tables.in_memory(), send, forward)
    offsets = dict.fromkeys(queues, 0)
    last: dict[int, tuple[float, str]] = {}

    def heartbeat() -> None:  # every results partition's bound, as the timer sends it
        for p in range(partitions):
            for part in stage.values():
                part.report(p, last.get(p), not queues.get(("results", p)))
        release()

    async def go() -> None:
        heartbeat()
        while any(queues.values()):
            if rng.random() < 0.1:
                heartbeat()
            topic, p = rng.choice([k for k, q in queues.items() if q])
            for _ in range(rng.randint(1, 60)):
                queue = queues[topic, p]
                if not queue:
                    break
                event = queue.popleft()
                offset = offsets[topic, p]
                offsets[topic, p] += 1
                if isinstance(event, OverdoseReportV1):
                    await processor.on_report(event, p, offset)
                else:
                    await processor.on_result(event, p, offset)
                    last[p] = (event_time(event), str(event.event_id))
                    for part in stage.values():
                        part.report(p, last[p], not queue)
                release()

    asyncio.run(go())
    heartbeat()
    assert not any(part.pending for part in stage.values())
    return by_id(sent)


@pytest.mark.parametrize("level", ["postal_code", "county", "state"])
def test_any_interleaving_of_partitions_gives_the_signals_of_one_processor(level: str) -> None:
    events = states_and_bc_stream()
    want = reference_signals(events, detection_spike_level=level)
    kinds = {s.get("pattern", s["kind"]) for s in want.values()}
    assert {"spike", "novel_substance", "unexpected_adulterant"} <= kinds, kinds
    spiked = {s["region_id"] for s in want.values() if s["kind"] == "spike"}
    assert len(spiked) >= 2, spiked
    for seed, partitions in ((1, 4), (2, 6), (3, 3)):
        got = interleaved(events, level, partitions, seed)
        missing, extra = set(want) - set(got), set(got) - set(want)
        assert not missing and not extra, (seed, [want[i] for i in missing][:3],
                                           [got[i] for i in extra][:3])
        assert got == want
