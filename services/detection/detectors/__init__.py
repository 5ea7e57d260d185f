"""Spike detectors that follow published reference implementations.

EARS C1/C2/C3, CUSUM and farringtonFlexible follow R ``surveillance``; EWMA follows CDC
``Rnssp::alert_ewma``; ``threshold`` is ODMAP's fixed-count rule; ``poisson`` is a Poisson
rolling-baseline exceedance test. See ``docs/detectors.md``.
"""

from collections.abc import Callable

from .base import DetectorPoint
from .cusum import cusum
from .ears import ears_c1, ears_c2, ears_c3
from .ewma import ewma, ewma_pvalues
from .farrington import farrington_flexible
from .poisson import poisson
from .threshold import threshold

METHODS: dict[str, Callable[..., list[DetectorPoint]]] = {
    "ears-c1": ears_c1,
    "ears-c2": ears_c2,
    "ears-c3": ears_c3,
    "cusum": cusum,
    "farrington-flexible": farrington_flexible,
    "ewma": ewma,
    "threshold": threshold,
    "poisson": poisson,
}

__all__ = [
    "METHODS",
    "DetectorPoint",
    "cusum",
    "ears_c1",
    "ears_c2",
    "ears_c3",
    "ewma",
    "ewma_pvalues",
    "farrington_flexible",
    "poisson",
    "threshold",
]
