"""ESSENCE EWMA detector following CDC ``Rnssp::alert_ewma`` (``ewma_loop``).

Reference: ``Rnssp/R/alert_ewma.R`` (CDCgov/Rnssp). Two EWMAs (weights ``w1=0.4`` for
gradual and ``w2=0.9`` for sudden events) are compared with the mean of a baseline of up
to ``B=28`` points that ends ``g=2`` points (guard band) before the current one; the
baseline grows from 7 points at the start of the series. Each statistic
``(z - mean) / sigma`` uses ESSENCE's corrected sigma (with the t-quantile floor and
constant), outlying smoothed values are pulled back to the red limit, and the smaller of
the two one-sided Student-t p-values (df = baseline length - 1) is kept. Rnssp colours it
red when p < 0.01 and yellow when 0.01 <= p < 0.05; here ``alarm`` means ``p < alpha``
(default 0.01, i.e. red; pass 0.05 for red-or-yellow). Series whose values are all below 1
(percentages) are scaled by the median of their positive values, as Rnssp does.

The upper bound is the smallest current count for which either statistic would exceed
the ``1 - alpha`` Student-t quantile (derived from the same formulas).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import t as student_t

from .base import DetectorPoint, check_start

MIN_BASELINE = 7


def ewma_pvalues(
    counts: Sequence[float], *, baseline: int = 28, guard_band: int = 2,
    w1: float = 0.4, w2: float = 0.9, alpha: float = 0.01,
) -> list[tuple[float, float] | None]:
    """Per point ``(p_value, upperbound)`` as ewma_loop, or None where it gives NA."""
    if baseline < MIN_BASELINE:
        raise ValueError("baseline length B must be greater than or equal to 7")
    if guard_band < 0:
        raise ValueError("guardband length g cannot be negative")
    y0 = np.asarray(counts, dtype=float)
    n = len(y0)
    out: list[tuple[float, float] | None] = [None] * n
    first = MIN_BASELINE + guard_band  # 0-based index of the first tested point
    if n < baseline + guard_band + 1 or n <= first:
        return out
    scale = 1.0
    if y0.max() < 1 and np.any(y0 > 0):
        scale = float(np.median(y0[y0 > 0]))
    y = y0 / scale
    g = guard_band
    z1 = z2 = float(y[0])
    for i in range(1, first):
        z1 = w1 * float(y[i]) + (1 - w1) * z1
        z2 = w2 * float(y[i]) + (1 - w2) * z2
    for i in range(first, n):
        hi = i - g  # baseline is y[lo:hi]
        lo = max(0, hi - baseline)
        ref = y[lo:hi]
        length = len(ref)
        n_df = length - 1
        expected = float(np.mean(ref))
        sigma = float(np.std(ref, ddof=1))
        ucl_alert = round(float(student_t.ppf(1 - 0.01, n_df)), 5)
        ucl_warning = round(float(student_t.ppf(1 - 0.05, n_df)), 5)
        sigmas = []
        for w in (w1, w2):
            correction = math.sqrt(
                w / (2 - w) + 1 / length
                - 2 * (1 - w) ** (g + 1) * ((1 - (1 - w) ** length) / length)
            )
            min_sigma = (w / ucl_warning) * (0.01 + 0.05 * (1 - w) ** 2)
            constant = (0.1289 - (0.2414 - 0.1826 * (1 - w) ** 4) * math.log(10 * 0.05)) * (
                w / ucl_warning
            )
            sigmas.append(max(min_sigma, sigma * correction + constant))
        s1, s2 = sigmas
        q = float(student_t.ppf(1 - alpha, n_df))
        bound = float(min(
            (expected + q * s1 - (1 - w1) * z1) / w1,
            (expected + q * s2 - (1 - w2) * z2) / w2,
        ))
        z1 = w1 * float(y[i]) + (1 - w1) * z1
        z2 = w2 * float(y[i]) + (1 - w2) * z2
        stat1 = (z1 - expected) / s1
        stat2 = (z2 - expected) / s2
        if abs(stat1) > ucl_alert:
            z1 = expected + math.copysign(1.0, stat1) * ucl_alert * s1
        if abs(stat2) > ucl_alert:
            z2 = expected + math.copysign(1.0, stat2) * ucl_alert * s2
        p1 = 1 - float(student_t.cdf(stat1, n_df))
        p2 = 1 - float(student_t.cdf(stat2, n_df))
        out[i] = (min(p1, p2), bound * scale)
    return out


def ewma(
    counts: Sequence[float], *, start: int, baseline: int = 28, guard_band: int = 2,
    w1: float = 0.4, w2: float = 0.9, alpha: float = 0.01,
) -> list[DetectorPoint]:
    """Rnssp ``alert_ewma``; alarm where the p-value < ``alpha`` (0.01 = red)."""
    check_start(counts, start)
    results = ewma_pvalues(
        counts, baseline=baseline, guard_band=guard_band, w1=w1, w2=w2, alpha=alpha
    )
    points: list[DetectorPoint] = []
    for t in range(start, len(counts)):
        r = results[t]
        x = float(counts[t])
        if r is None:
            points.append(DetectorPoint(t, x, None, False))
        else:
            points.append(DetectorPoint(t, x, r[1], r[0] < alpha))
    return points
