"""Poisson rolling baseline for sparse daily counts.

The expected count is the mean of the previous ``baseline`` points (default 28 days, no
guard band); the upper bound is the ``1 - alpha`` quantile of a Poisson with that mean
(default alpha 0.001) and an alarm is raised when the count exceeds it. This is the
classical Poisson exceedance test used for small counts (e.g. the ESSENCE/EARS family and
SaTScan's Poisson model), written here without a single canonical package to follow.
An all-zero baseline gives an upper bound of 0, so any count then alarms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import special
from scipy.stats import poisson as _poisson

from .base import DetectorPoint, check_start


def qpois(q: float, mu: float) -> float:
    """``scipy.stats.poisson.ppf(q, mu)`` (R's ``qpois``) for scalars, without scipy's
    array-argument overhead (the stream calls it for every new bucket): the same formula
    as scipy's ``poisson_gen._ppf``."""
    if not (0 < q < 1) or not mu > 0:
        return float(_poisson.ppf(q, mu))
    vals = math.ceil(float(special.pdtrik(q, mu)))
    vals1 = max(vals - 1, 0)
    return float(vals1 if float(special.pdtr(vals1, mu)) >= q else vals)


def poisson(
    counts: Sequence[float], *, start: int, baseline: int = 28, alpha: float = 0.001
) -> list[DetectorPoint]:
    """Alarm where ``count > qpois(1 - alpha, mean(previous baseline points))``."""
    check_start(counts, start)
    if baseline < 1:
        raise ValueError("baseline must be >= 1")
    points: list[DetectorPoint] = []
    for t in range(start, len(counts)):
        x = float(counts[t])
        if t < baseline:
            points.append(DetectorPoint(t, x, None, False))
            continue
        lam = float(sum(counts[t - baseline : t])) / baseline
        ub = qpois(1 - alpha, lam) if lam > 0 else 0.0
        points.append(DetectorPoint(t, x, ub, x > ub))
    return points
