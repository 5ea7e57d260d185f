"""The latency benchmark's BC mix: which event a signal is timed from, and the rows sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.detection.backtest_bc import DATA
from benchmarks.detection.latency import _bc_bodies, _triggered


def test_a_signal_is_timed_from_its_evidence_accepted_last() -> None:
    accepted = {"a": 10.0, "b": 12.0, "c": 11.0}
    signals = [
        {"pattern": "multi_site_cluster", "evidence": ["a", "b", "c"], "read": 12.5,
         "sent": 12.4},
        {"pattern": "novel_substance", "evidence": ["a"], "read": 10.2, "sent": 10.1},
        {"pattern": "novel_substance", "evidence": ["a"], "read": 10.3, "sent": 10.25},
        {"pattern": "novel_substance", "evidence": ["elsewhere"], "read": 9.0, "sent": 9.0},
    ]
    latencies, first, orphans = _triggered(accepted, signals)
    assert latencies == pytest.approx([0.5, 0.2, 0.3])
    assert first == {"b": (12.5, 12.4), "a": (10.2, 10.1)}
    assert orphans == 1


@pytest.mark.skipif(not DATA.exists(), reason="the BC export is not in ../shared/data")
def test_bc_rows_go_oldest_first_and_end_yesterday() -> None:
    bodies = _bc_bodies(300)
    assert len(bodies) == 300
    times = [b.collected_at for b in bodies]
    assert times == sorted(times)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert times[-1].date() == yesterday
    assert all(t < datetime.now(UTC) for t in times)
    assert len({b.sample_id for b in bodies}) == 300
    # the real spread, shifted by whole days: the first weeks of the export (2018-06-20 on)
    assert (times[-1] - times[0]).days < 60
