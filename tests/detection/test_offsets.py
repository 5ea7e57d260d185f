"""An agent takes each partition's messages as one unbroken run of offsets from the
committed offset (`services/detection/offsets.py`): what faust skips after a rebalance is
sought back, what it hands over twice or from before the rebalance is not taken."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from faust.types import TP

from services.detection import offsets
from services.detection.offsets import Contiguous

TOPIC = "drugcheck.results.v1"


@dataclass
class FakeConsumer:
    committed: dict[int, int] = field(default_factory=dict)
    highwaters: dict[int, int] = field(default_factory=dict)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    done: bool = True

    @property
    def _committed_offset(self) -> dict[TP, int]:
        return {TP(TOPIC, p): o for p, o in self.committed.items()}

    def seeked(self) -> bool:
        return self.done

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp.partition)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))


@dataclass
class FakeApp:
    consumer: FakeConsumer
    consumer_generation_id: int = 3


@dataclass
class Message:
    partition: int
    offset: int
    generation_id: int = 3


def _taken(contiguous: Contiguous, offsets_: list[int], partition: int = 0) -> list[int]:
    async def go() -> list[int]:
        return [o for o in offsets_ if await contiguous.take(Message(partition, o))]
    return asyncio.run(go())


def test_from_the_committed_offset_in_order_and_once() -> None:
    consumer = FakeConsumer(committed={0: 5})
    contiguous = Contiguous(FakeApp(consumer), TOPIC)
    assert _taken(contiguous, [5, 6, 6, 5, 7]) == [5, 6, 7]
    assert consumer.seeks == []


def test_a_skipped_offset_is_sought_back_and_what_came_past_it_is_not_taken() -> None:
    consumer = FakeConsumer(committed={0: 8})
    contiguous = Contiguous(FakeApp(consumer), TOPIC)
    # faust handed over the position fetched before the rebalance (32...), not 8
    assert _taken(contiguous, [32, 33, 34]) == []
    assert consumer.seeks == [(0, 8)]  # once: the later ones come again after the seek
    assert _taken(contiguous, [8, 9, 32, 10]) == [8, 9, 10]  # 32: sought back to 10
    assert consumer.seeks[-1] == (0, 10)


def test_nothing_committed_starts_where_the_partition_starts() -> None:
    contiguous = Contiguous(FakeApp(FakeConsumer()), TOPIC)
    assert _taken(contiguous, [0, 1, 2]) == [0, 1, 2]


def test_a_message_fetched_before_the_rebalance_is_not_taken() -> None:
    contiguous = Contiguous(FakeApp(FakeConsumer(committed={0: 0})), TOPIC)

    async def go() -> bool:
        return await contiguous.take(Message(0, 0, generation_id=2))
    assert asyncio.run(go()) is False
    assert _taken(contiguous, [0]) == [0]


def test_a_rebalance_starts_each_partition_again_from_its_committed_offset() -> None:
    consumer = FakeConsumer(committed={0: 0})
    contiguous = Contiguous(FakeApp(consumer), TOPIC)
    assert _taken(contiguous, [0, 1, 2]) == [0, 1, 2]
    contiguous.forget({0})
    consumer.committed[0] = 1
    assert _taken(contiguous, [1, 2]) == [1, 2]


def test_a_partition_with_more_to_fetch_and_nothing_coming_is_sought_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    consumer = FakeConsumer(committed={0: 110, 1: 4}, highwaters={0: 210, 1: 4})
    contiguous = Contiguous(FakeApp(consumer), TOPIC)
    assert _taken(contiguous, [110]) == [110]

    def watch() -> None:
        asyncio.run(contiguous.watch([0, 1]))

    watch()
    clock[0] += offsets.STALLED / 2
    watch()
    assert consumer.seeks == []  # not yet: messages may still be on their way
    clock[0] += offsets.STALLED
    watch()
    assert consumer.seeks == [(0, 111)]  # partition 1 is caught up: left alone
