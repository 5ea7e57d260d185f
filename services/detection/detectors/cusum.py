"""Poisson CUSUM following R ``surveillance::algo.cusum`` (also ``surveillance::cusum``).

Reference: ``surveillance/R/algo_cusum.R``; Rossi, Lampugnani & Marchi (1999),
"An approximate CUSUM procedure for surveillance of health events".

The reference mean ``m`` (when not given) is the mean of every point before ``start``
(algo.cusum's ``m=NULL``: ``mean(observed[1:(range[1]-1)])``). Each monitored count is
standardised (``trans``), the CUSUM ``C_t = max(0, C_{t-1} + x_t - k)`` starts at 0 and is
never reset, and an alarm is raised when ``C_t >= h``. The upper bound is the count that
would make ``C_t`` reach ``h`` (for "standard": ``ceil(sqrt(m) * (h + k - C_{t-1}) + m)``),
NaN or negative bounds set to 0. Defaults as algo.cusum: k=1.04, h=2.26, trans="standard".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .base import DetectorPoint, check_start

TRANSFORMS = ("standard", "rossi", "anscombe")


def _standardise(x: float, m: float, trans: str) -> float:
    if trans == "standard":
        return (x - m) / math.sqrt(m)
    if trans == "rossi":
        return (x - 3 * m + 2 * math.sqrt(x * m)) / (2 * math.sqrt(m))
    # anscombe; float ** float is typed Any (a negative base gives a complex), x, m >= 0 here
    return float(1.5 * (x ** (2 / 3) - m ** (2 / 3)) / m ** (1 / 6))


def _upperbound(m: float, h: float, k: float, c_prev: float, trans: str) -> float:
    if trans == "standard":
        ub = float(math.ceil(math.sqrt(m) * (h + k - c_prev) + m))
    elif trans == "rossi":
        root = m ** (1 / 2)
        inner = 4 * m**2 + 2 * m**1.5 * h + 2 * m**1.5 * k - 2 * m**1.5 * c_prev
        ub = (
            2 * h * root + 2 * k * root - 2 * c_prev * root + 5 * m - 2 * math.sqrt(inner)
            if inner >= 0
            else math.nan
        )
    else:  # anscombe
        base = (2 / 3) * m ** (1 / 6) * (h + k - c_prev) + m ** (2 / 3)
        ub = 0.0 if base < 0 else base**1.5
    if math.isnan(ub) or ub < 0:
        return 0.0
    return ub


def cusum(
    counts: Sequence[float], *, start: int, k: float = 1.04, h: float = 2.26,
    m: float | None = None, trans: str = "standard",
) -> list[DetectorPoint]:
    """Poisson CUSUM as ``surveillance::algo.cusum`` with range = ``start`` .. end."""
    check_start(counts, start)
    if trans not in TRANSFORMS:
        raise ValueError(f"invalid trans {trans!r}; expected one of {TRANSFORMS}")
    if m is None:
        if start < 1:
            raise ValueError("CUSUM needs at least one point before start to estimate m")
        m = sum(counts[:start]) / start
    if m <= 0:
        # R yields NaN statistics and NA alarms here; refuse instead.
        raise ValueError("CUSUM reference mean m must be > 0 (history is all zero)")
    points: list[DetectorPoint] = []
    c_prev = 0.0
    for t in range(start, len(counts)):
        x = float(counts[t])
        ub = _upperbound(m, h, k, c_prev, trans)
        c_t = max(0.0, c_prev + (_standardise(x, m, trans) - k))
        points.append(DetectorPoint(t, x, ub, c_t >= h))
        c_prev = c_t
    return points
