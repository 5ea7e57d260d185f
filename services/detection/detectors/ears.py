"""CDC EARS C1, C2 and C3, following R ``surveillance::earsC``.

Reference: ``surveillance/R/earsC.R`` (Salmon, Höhle et al.); Hutwagner et al. (2003),
"The bioterrorism preparedness and response Early Aberration Reporting System (EARS)".

* C1: baseline = the ``baseline`` points just before t (t-baseline .. t-1).
* C2: same length, with a guard band of 2 (t-baseline-2 .. t-3).
* C3: uses the C2 statistics of t-1 and t-2. Like earsC, its upper bound is
  ``observed[t] + max(sd_t, minSigma) * (z - (max(0, C2[t-2]-1) + max(0, C2[t-1]-1)))``,
  floored at 0, so a C3 alarm is raised when the two lagged C2 terms exceed z.

Upper bound for C1/C2: ``mean + z_{1-alpha} * max(sd, minSigma)`` (sample sd, n-1).
Alarm: ``observed > upperbound``. Defaults as earsC: baseline 7, minSigma 0, alpha 0.001
(C1/C2) and 0.025 for C3 (earsC uses 0.025 for C3 whenever alpha is not given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from .base import DetectorPoint, check_start, finite_or_none

DEFAULT_BASELINE = 7
DEFAULT_ALPHA_C1_C2 = 0.001
DEFAULT_ALPHA_C3 = 0.025


def _validate(baseline: int, min_sigma: float) -> None:
    if min_sigma < 0:
        raise ValueError("The minimum sigma parameter (min_sigma) needs to be positive")
    if baseline < 3:
        raise ValueError("Minimum baseline to use is 3.")


def _window_stats(
    y: np.ndarray, t: int, baseline: int, guard: int
) -> tuple[float, float] | None:
    """Mean and sample sd of y[t-guard-baseline .. t-guard-1], or None if too short."""
    lo = t - guard - baseline
    if lo < 0:
        return None
    ref = y[lo : t - guard]
    return float(np.mean(ref)), float(np.std(ref, ddof=1))


def _mean_sd_bound(
    counts: Sequence[float], start: int, baseline: int, alpha: float, min_sigma: float,
    guard: int,
) -> list[DetectorPoint]:
    _validate(baseline, min_sigma)
    check_start(counts, start)
    y = np.asarray(counts, dtype=float)
    z = float(norm.ppf(1 - alpha))
    points: list[DetectorPoint] = []
    for t in range(start, len(y)):
        stats = _window_stats(y, t, baseline, guard)
        if stats is None:
            points.append(DetectorPoint(t, float(y[t]), None, False))
            continue
        mean, sd = stats
        ub = mean + z * max(sd, min_sigma)
        points.append(DetectorPoint(t, float(y[t]), ub, bool(y[t] > ub)))
    return points


def ears_c1(
    counts: Sequence[float], *, start: int, baseline: int = DEFAULT_BASELINE,
    alpha: float = DEFAULT_ALPHA_C1_C2, min_sigma: float = 0.0,
) -> list[DetectorPoint]:
    """EARS C1 (earsC method "C1"): baseline of the previous ``baseline`` points."""
    return _mean_sd_bound(counts, start, baseline, alpha, min_sigma, guard=0)


def ears_c2(
    counts: Sequence[float], *, start: int, baseline: int = DEFAULT_BASELINE,
    alpha: float = DEFAULT_ALPHA_C1_C2, min_sigma: float = 0.0,
) -> list[DetectorPoint]:
    """EARS C2 (earsC method "C2"): baseline lagged by a guard band of 2 points."""
    return _mean_sd_bound(counts, start, baseline, alpha, min_sigma, guard=2)


def _c2_statistic(y: np.ndarray, t: int, baseline: int, min_sigma: float) -> float:
    """C2 statistic (y[t] - mean) / max(sd, minSigma); NaN/inf like R on a zero sd."""
    stats = _window_stats(y, t, baseline, 2)
    if stats is None:
        return float("nan")
    mean, sd = stats
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.divide(y[t] - mean, max(sd, min_sigma)))


def ears_c3(
    counts: Sequence[float], *, start: int, baseline: int = DEFAULT_BASELINE,
    alpha: float = DEFAULT_ALPHA_C3, min_sigma: float = 0.0,
) -> list[DetectorPoint]:
    """EARS C3 (earsC method "C3"): lagged C2 statistics of t-1 and t-2, as earsC."""
    _validate(baseline, min_sigma)
    check_start(counts, start)
    y = np.asarray(counts, dtype=float)
    z = float(norm.ppf(1 - alpha))
    points: list[DetectorPoint] = []
    for t in range(start, len(y)):
        stats = _window_stats(y, t - 2, baseline, 2)  # t-2 needs the longest history
        if stats is None:
            points.append(DetectorPoint(t, float(y[t]), None, False))
            continue
        _, sd_t = _window_stats(y, t, baseline, 2) or (0.0, 0.0)
        # np.maximum propagates NaN like R's pmax (no na.rm).
        lag2 = float(np.maximum(0.0, _c2_statistic(y, t - 2, baseline, min_sigma) - 1))
        lag1 = float(np.maximum(0.0, _c2_statistic(y, t - 1, baseline, min_sigma) - 1))
        with np.errstate(invalid="ignore"):
            raw = float(y[t] + max(sd_t, min_sigma) * (z - (lag2 + lag1)))
        ub = finite_or_none(float(np.maximum(0.0, raw)))
        alarm = ub is not None and bool(y[t] > ub)
        points.append(DetectorPoint(t, float(y[t]), ub, alarm))
    return points
