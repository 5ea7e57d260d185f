"""Common result type and helpers shared by the spike detectors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorPoint:
    """One monitored time point.

    ``upperbound`` is ``None`` where the method has too little history (R returns NA there);
    ``alarm`` is then ``False``.
    """

    index: int
    count: float
    upperbound: float | None
    alarm: bool


def check_start(counts: Sequence[float], start: int) -> None:
    """Reject a ``start`` outside the series."""
    if start < 0 or start > len(counts):
        raise ValueError(f"start={start} is outside the series of length {len(counts)}")


def finite_or_none(value: float) -> float | None:
    """Map NaN/inf (R's NA/NaN/Inf) to ``None``."""
    return value if math.isfinite(value) else None
