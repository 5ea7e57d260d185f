"""ODMAP-style fixed threshold: alarm when the count in a rolling window exceeds N.

Reference: ODMAP (Overdose Detection Mapping Application Program, HIDTA) spike alerts:
an agency sets a threshold of overdoses in its area within 24 hours. With daily counts
and ``window=1`` this is ``count > threshold``; with ``window=w`` the sum of the last ``w``
points (current included) is compared. The upper bound reported is the largest current
count that stays silent (``threshold - sum of the previous w-1 points``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import DetectorPoint, check_start


def threshold(
    counts: Sequence[float], *, start: int = 0, threshold: float, window: int = 1
) -> list[DetectorPoint]:
    """Alarm where ``sum(counts[t-window+1 .. t]) > threshold``."""
    check_start(counts, start)
    if window < 1:
        raise ValueError("window must be >= 1")
    points: list[DetectorPoint] = []
    for t in range(start, len(counts)):
        x = float(counts[t])
        if t - window + 1 < 0:
            points.append(DetectorPoint(t, x, None, False))
            continue
        previous = float(sum(counts[t - window + 1 : t]))
        ub = threshold - previous
        points.append(DetectorPoint(t, x, ub, x > ub))
    return points
