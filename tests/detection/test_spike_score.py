"""The spike score rule (docs/detectors.md, "Score and severity"), degenerate bounds included."""

from __future__ import annotations

import pytest

from services.detection.spikes import evaluate


def test_score_is_the_excess_over_the_bound_in_bound_widths() -> None:
    history = [2.0, 4.0, 3.0, 5.0, 2.0, 4.0, 3.0, 3.0, 4.0]  # c2: days 1..7 of these lags
    ev = evaluate("ears-c2", {}, history, 12.0)
    assert ev.alarm
    assert ev.upperbound is not None and ev.upperbound > ev.expected
    assert ev.score == pytest.approx((12.0 - ev.expected) / (ev.upperbound - ev.expected))


def test_an_all_zero_baseline_scores_the_excess_count() -> None:
    """sd 0 and min_sigma 0 put the bound on the (zero) mean: (x - e) / (ub - e) would divide
    by zero, so the score is x - e, the cases above what was expected."""
    zeros = [0.0] * 9
    one = evaluate("ears-c2", {}, zeros, 1.0)
    assert (one.alarm, one.expected, one.upperbound) == (True, 0.0, 0.0)
    assert one.score == 1.0 and one.severity == "warning"
    three = evaluate("ears-c2", {}, zeros, 3.0)
    assert three.score == 3.0 and three.severity == "critical"  # critical_score 2


def test_min_sigma_gives_an_all_zero_baseline_a_real_bound() -> None:
    ev = evaluate("ears-c2", {"min_sigma": 0.5}, [0.0] * 9, 3.0)
    assert ev.upperbound is not None and ev.upperbound > 0
    assert ev.score == pytest.approx(3.0 / ev.upperbound)


def test_no_bound_scores_zero() -> None:
    ev = evaluate("cusum", {}, [0.0] * 40, 5.0)  # R: NaN on an all-zero reference
    assert ev.upperbound is None and not ev.alarm and ev.score == 0.0
