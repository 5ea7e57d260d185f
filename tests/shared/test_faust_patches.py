"""The faust / aiokafka patches are checked against the versions they were written for."""

from __future__ import annotations

import asyncio
import warnings
from collections import defaultdict
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from shared import faust_patches


def test_the_installed_versions_are_the_ones_the_patches_were_written_for() -> None:
    assert faust_patches.version_mismatches() == []


def test_another_version_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "9.9.9" if name == "aiokafka" else real(name))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        faust_patches.warn_on_other_versions()
    assert [str(w.message) for w in caught] == [
        "aiokafka 9.9.9 is installed; shared/faust_patches.py was written for 0.14.0: "
        "check each patch there against the new code"]
    assert all(w.category is RuntimeWarning for w in caught)


class _App:
    contiguous_offsets = True
    consumer_generation_id = 2


def _consumer(committed: int | None, acked: list[int], seeked: bool = True) -> Any:
    """A bare patched consumer: only the bookkeeping the commit rule reads."""
    consumer: Any = object.__new__(faust_patches._Consumer)
    tp = TP("t", 0)
    consumer.app = _App()
    consumer._committed_offset = defaultdict(lambda: None, {tp: committed})
    consumer._acked = defaultdict(list, {tp: list(acked)})
    consumer._acked_index = defaultdict(set, {tp: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer.seeked_generation = 2 if seeked else 1
    return consumer


def test_a_commit_starts_at_the_committed_offset() -> None:
    tp = TP("t", 0)
    assert _consumer(8, [8, 9, 10])._new_offset(tp) == 11
    # faust's own rule lets one missing offset through (9 - 8 = 1): 8 is held, not handled
    assert _consumer(8, [9, 10])._new_offset(tp) is None
    assert _consumer(8, [8, 9], seeked=False)._new_offset(tp) is None  # before the seek
    assert _consumer(None, [0, 1])._new_offset(tp) == 2  # nothing committed yet


def test_a_gap_is_not_counted_as_acknowledged() -> None:
    consumer = _consumer(8, [])
    asyncio.run(consumer._add_gap(TP("t", 0), 9, 32))
    assert not consumer._gap[TP("t", 0)]


def test_an_acknowledgement_from_before_the_rebalance_is_not_counted() -> None:
    consumer = _consumer(8, [])
    old = SimpleNamespace(generation_id=1, acked=False, tp=TP("t", 0), offset=8, topic="t")
    assert consumer.ack(old) is False
    assert consumer._acked[TP("t", 0)] == []
