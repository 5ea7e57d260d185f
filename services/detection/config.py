"""Detection configuration: global defaults from `Settings`, overridden per region.

`LOOKOUT_DETECTION_REGIONS_JSON` maps a region prefix to overrides, e.g.
``{"us/wa/king-county": {"method": "ears-c2", "params": {"alpha": 0.01}, "cluster_k": 2}}``;
the longest prefix of a region id wins (``"*"`` applies everywhere). Every field of
`RegionConfig` can be overridden; unknown names are refused at start-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from services.detection.detectors import METHODS
from shared.region_prefix import covers
from shared.settings import Settings

LEVELS = {"state": 2, "county": 3, "postal_code": 4}  # path segments kept of a region id
BUCKET_SECONDS = {"hour": 3600, "day": 86400, "week": 7 * 86400}


@dataclass(frozen=True)
class RegionConfig:
    # Spikes: method and its keyword parameters (as `lookout detect`; see docs/detectors.md).
    method: str = "poisson"
    params: dict[str, Any] = field(default_factory=dict)
    critical_score: float = 2.0  # score at or above this makes a spike critical
    # Contamination (b): novel substance.
    novel_days: float = 90.0
    # (c) multi-site cluster: >= cluster_k results of one high-risk substance from
    # >= cluster_m sites within cluster_hours.
    cluster_k: int = 3
    cluster_m: int = 2
    cluster_hours: float = 72.0
    # (d) rising positivity: the share of samples with a high-risk substance over the last
    # positivity_days against the positivity_baseline_days before them (one-sided binomial
    # test at positivity_alpha; at least positivity_min_positives positives).
    positivity_days: int = 7
    positivity_baseline_days: int = 28
    positivity_alpha: float = 0.01
    positivity_min_positives: int = 3


@dataclass(frozen=True)
class DetectionConfig:
    level: int
    bucket_seconds: int
    grace_seconds: float
    cooldown_seconds: float
    default: RegionConfig
    overrides: tuple[tuple[str, RegionConfig], ...]  # longest prefix first

    def for_region(self, region_id: str) -> RegionConfig:
        for prefix, region_config in self.overrides:
            if covers(prefix, region_id):
                return region_config
        return self.default

    def area_of(self, region_id: str) -> str:
        """The region at the spike grouping level (a prefix of the id)."""
        return "/".join(region_id.split("/")[: self.level])


def _region_config(base: RegionConfig, raw: dict[str, Any], where: str) -> RegionConfig:
    names = {f.name for f in dataclasses.fields(RegionConfig)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{where}: unknown detection setting(s) {sorted(unknown)}")
    merged = dataclasses.replace(base, **raw)
    if merged.method not in METHODS:
        raise ValueError(f"{where}: unknown method {merged.method!r}; one of {sorted(METHODS)}")
    return merged


def load_config(settings: Settings) -> DetectionConfig:
    """Build and check the configuration; raises ValueError on a bad setting."""
    base = _region_config(RegionConfig(), {"method": settings.detection_spike_method},
                          "LOOKOUT_DETECTION_SPIKE_METHOD")
    raw = settings.detection_regions_json or {}
    overrides = sorted(
        ((prefix.rstrip("/"), _region_config(base, value, f"region {prefix!r}"))
         for prefix, value in raw.items()),
        key=lambda item: (item[0] != "*", len(item[0])), reverse=True,
    )
    bucket = BUCKET_SECONDS[settings.detection_spike_bucket]
    for prefix, cfg in [("default", base), *overrides]:
        if cfg.method == "farrington-flexible" and bucket != BUCKET_SECONDS["week"]:
            raise ValueError(f"{prefix}: farrington-flexible needs "
                             "LOOKOUT_DETECTION_SPIKE_BUCKET=week")
    return DetectionConfig(
        level=LEVELS[settings.detection_spike_level],
        bucket_seconds=bucket,
        grace_seconds=settings.detection_grace_hours * 3600,
        cooldown_seconds=settings.detection_cooldown_hours * 3600,
        default=base,
        overrides=tuple(overrides),
    )
