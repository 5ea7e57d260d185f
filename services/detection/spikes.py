"""Spike evaluation over event-time buckets (pure; the spikes agent and `lookout detect` run
the same detector functions from `detectors.METHODS`).

A region's counts form a series of buckets (hour, day or week). The current bucket is
evaluated with the method's own history (the buckets before it); `evaluate` returns the
detector's upper bound and alarm for the last point, plus the baseline mean ("expected"),
a score and a severity. Every method here alarms on a count once it alarms on a smaller
one, so `alarm_threshold` finds the smallest alarming count once per bucket and history,
and the agent compares each new count with it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.detection.detectors import METHODS
from services.detection.detectors.farrington import _glm_data
from shared.events import Severity

MAX_COUNT = 1_000_000  # no alarm below this: the method cannot alarm here
# Methods whose upper bound comes from the history alone, alarming iff count > bound.
BOUND_FROM_HISTORY = frozenset({"poisson", "ears-c1", "ears-c2", "threshold"})


@dataclass(frozen=True)
class SpikeEvaluation:
    alarm: bool
    observed: float
    expected: float
    upperbound: float | None
    score: float
    severity: Severity


def history_length(method: str, params: dict[str, Any]) -> int:
    """How many buckets before the current one the method reads."""
    baseline = params.get("baseline")
    if method in ("ears-c1", "ears-c2", "ears-c3"):
        lag = {"ears-c1": 0, "ears-c2": 2, "ears-c3": 4}[method]
        return int(baseline or 7) + lag
    if method == "cusum":
        return int(baseline or 28) + int(params.get("run", 7)) - 1
    if method == "farrington-flexible":
        return 53 * int(params.get("b", 5)) + int(params.get("w", 3)) + 1
    if method == "ewma":
        return int(baseline or 28) + int(params.get("guard_band", 2))
    if method == "threshold":
        return int(params.get("window", 1)) - 1
    if method == "poisson":
        return int(baseline or 28)
    raise ValueError(f"unknown method {method!r}")


def _call(method: str, params: dict[str, Any], series: list[float],
          dates: Sequence[dt.date] | None) -> tuple[float | None, bool]:
    """Upper bound and alarm of the last point of `series`."""
    kwargs = dict(params)
    start = len(series) - 1
    if method == "cusum":
        baseline = int(kwargs.pop("baseline", 28))
        kwargs.pop("run", None)
        start = min(baseline, start)
        if start < 1 or sum(series[:start]) <= 0:
            return None, False  # R: NaN statistics and NA alarms on an all-zero reference
    if method == "farrington-flexible":
        if dates is None:
            raise ValueError("farrington-flexible needs the bucket dates")
        kwargs["dates"] = list(dates)
    if method == "threshold" and "threshold" not in kwargs:
        raise ValueError("the threshold method needs params.threshold")
    point = METHODS[method](series, start=start, **kwargs)[-1]
    return point.upperbound, point.alarm


def _expected(method: str, params: dict[str, Any], series: list[float],
              dates: Sequence[dt.date] | None) -> float:
    """The mean of the method's baseline window (threshold: the agency's threshold)."""
    history = series[:-1]
    baseline = params.get("baseline")

    def mean(values: Sequence[float]) -> float:
        return float(sum(values)) / len(values) if values else 0.0

    if method == "ears-c1":
        return mean(history[-int(baseline or 7):])
    if method in ("ears-c2", "ears-c3"):
        return mean(history[: len(history) - 2][-int(baseline or 7):])
    if method == "cusum":
        return mean(series[: int(baseline or 28)])
    if method == "ewma":
        g = int(params.get("guard_band", 2))
        return mean(history[: len(history) - g][-int(baseline or 28):])
    if method == "threshold":
        return float(params["threshold"])
    if method == "farrington-flexible" and dates is not None:
        import numpy as np

        data = _glm_data(len(series) - 1, dates, np.asarray(series, dtype=float),
                         int(params.get("b", 5)), int(params.get("w", 3)),
                         int(params.get("past_weeks_not_included") or params.get("w", 3)))
        return mean([float(v) for v in data[1]]) if data is not None else 0.0
    return mean(history[-int(baseline or 28):])  # poisson


def evaluate(method: str, params: dict[str, Any], history: Sequence[float], count: float,
             dates: Sequence[dt.date] | None = None,
             critical_score: float = 2.0) -> SpikeEvaluation:
    """Evaluate `count` in the current bucket after `history` (oldest first)."""
    series = [float(v) for v in history] + [float(count)]
    upper, alarm = _call(method, params, series, dates)
    expected = _expected(method, params, series, dates)
    if upper is None:
        score = 0.0
    elif upper > expected:
        score = (count - expected) / (upper - expected)
    else:
        score = count - expected
    severity: Severity = "critical" if alarm and score >= critical_score else (
        "warning" if alarm else "info")
    return SpikeEvaluation(alarm, float(count), expected, upper, float(score), severity)


def alarm_threshold(method: str, params: dict[str, Any], history: Sequence[float],
                    dates: Sequence[dt.date] | None = None) -> int | None:
    """The smallest count that alarms after `history`, or None (no alarm possible)."""
    hist = [float(v) for v in history]

    def alarms(x: int) -> bool:
        return _call(method, params, [*hist, float(x)], dates)[1]

    upper, _ = _call(method, params, [*hist, 0.0], dates)
    if upper is None:
        return None
    guess = max(0, math.floor(upper) + 1) if math.isfinite(upper) else MAX_COUNT
    if method in BOUND_FROM_HISTORY and guess < MAX_COUNT:
        return guess  # alarm iff count > upper, and upper does not depend on the count
    if guess <= MAX_COUNT and alarms(guess) and (guess == 0 or not alarms(guess - 1)):
        return guess
    # The bound moves with the count (EARS C3): bisect on the monotone alarm.
    if not alarms(MAX_COUNT):
        return None
    lo, hi = 0, MAX_COUNT  # alarms(hi) holds
    if alarms(0):
        return 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if alarms(mid):
            hi = mid
        else:
            lo = mid
    return hi
