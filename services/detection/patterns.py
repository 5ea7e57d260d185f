"""Contamination patterns (b) novel substance, (c) multi-site cluster, (d) rising
positivity, as pure functions over plain table values (the agent reads and writes the
tables). Pattern (a), the unexpected adulterant, is `rules.unexpected_adulterants`.

All times are event times (the result's `collected_at`, epoch seconds); days are UTC days.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy.stats import binom

from services.detection.config import RegionConfig
from shared import substances
from shared.events import DrugCheckResultV1, Severity

DAY = 86400
NOVEL_MIN_RISK = 2  # cuts and benign substances (risk 0-1) are never "novel" news
SEEN_REFRESH = DAY  # a substance's last-seen time is rewritten at most once a day
CLUSTER_KEEP = 256  # newest results kept per (region, substance) for the cluster count
POSITIVITY_MIN_BASELINE_SAMPLES = 10


@dataclass(frozen=True)
class Found:
    """One detected substance worth watching, by its key in the tables."""

    key: str  # substance id, or "unrecognized:<compact raw name>"
    name: str
    risk: int
    recognized: bool


@dataclass(frozen=True)
class Candidate:
    pattern: str
    substance: Found
    severity: Severity
    evidence: tuple[uuid.UUID, ...]
    site_count: int = 1
    sample_count: int = 1


def found_substances(result: DrugCheckResultV1) -> list[Found]:
    """The result's substances, once each: recognized ones from the catalog, unrecognized
    names by their compact raw text; no-match and unusable entries are left out."""
    out: dict[str, Found] = {}
    for detected in result.substances:
        if detected.substance_id:
            try:
                sub = substances.get_substance(detected.substance_id)
            except KeyError:
                continue
            out.setdefault(sub.id, Found(sub.id, sub.name, sub.risk, True))
        elif detected.status == "unrecognized":
            compact = "".join(re.findall(r"[a-z0-9]+", detected.raw.casefold()))[:60]
            if compact:
                key = f"unrecognized:{compact}"
                out.setdefault(key, Found(key, detected.raw.strip()[:120], 0, False))
    return list(out.values())


def day_of(at: float) -> int:
    return int(at // DAY)


# ------------------------------------------------------------------ (b) novel substance

def novel(result: DrugCheckResultV1, at: float, found: Found, cfg: RegionConfig,
          in_region: dict[str, Any] | None, anywhere: dict[str, Any] | None,
          ) -> tuple[Candidate | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(candidate, new region value, new global value); a None value means unchanged.

    Novel: an unrecognized name; a substance never seen anywhere; or one not seen in the
    region within `novel_days`. A redelivered trigger (its id stored as "e") is novel again.
    """
    trigger = str(result.event_id)
    if not found.recognized:
        severity: Severity | None = "warning"
    elif found.risk < NOVEL_MIN_RISK:
        severity = None
    elif anywhere is None or anywhere.get("e") == trigger:
        severity = "critical" if found.risk >= substances.HIGH_RISK else "warning"
    elif (in_region is None or in_region.get("e") == trigger
          or at - float(in_region["t"]) > cfg.novel_days * DAY):
        severity = "critical" if found.risk >= 4 else "warning"
    else:
        severity = None
    new_region = _seen(in_region, at, trigger if severity else None)
    new_anywhere = _seen(anywhere, at, trigger if anywhere is None else None)
    candidate = Candidate("novel_substance", found, severity, (result.event_id,)) \
        if severity else None
    return candidate, new_region, new_anywhere


def _seen(value: dict[str, Any] | None, at: float, trigger: str | None) -> dict[str, Any] | None:
    if value is None:
        return {"t": at, "e": trigger}
    if trigger is not None and value.get("e") != trigger:
        return {"t": max(at, float(value["t"])), "e": trigger}
    if at > float(value["t"]) + SEEN_REFRESH:
        return {**value, "t": at}
    return None


# ------------------------------------------------------------------ (c) multi-site cluster

def cluster(result: DrugCheckResultV1, at: float, found: Found, cfg: RegionConfig,
            value: dict[str, Any] | None) -> tuple[Candidate | None, dict[str, Any] | None]:
    """At least `cluster_k` results with this high-risk substance from at least `cluster_m`
    sites within `cluster_hours` (ending at this result). Entries are [at, site, event]."""
    entries: list[list[Any]] = list((value or {}).get("r", []))
    trigger = str(result.event_id)
    changed = False
    if not any(e[2] == trigger for e in entries):
        entries.append([at, str(result.site_id), trigger])
        entries.sort(key=lambda e: (e[0], e[2]))
        newest = float(entries[-1][0])
        horizon = newest - 2 * cfg.cluster_hours * 3600  # keep room for late results
        entries = [e for e in entries if float(e[0]) >= horizon][-CLUSTER_KEEP:]
        changed = True
    window = [e for e in entries if at - cfg.cluster_hours * 3600 < float(e[0]) <= at]
    sites = {e[1] for e in window}
    candidate = None
    if len(window) >= cfg.cluster_k and len(sites) >= cfg.cluster_m:
        severity: Severity = ("critical" if found.risk >= 4 or len(window) >= 2 * cfg.cluster_k
                              else "warning")
        evidence = tuple(uuid.UUID(e[2]) for e in window[-20:])
        candidate = Candidate("multi_site_cluster", found, severity, evidence,
                              site_count=len(sites), sample_count=len(window))
    return candidate, ({"r": entries} if changed else None)


# ------------------------------------------------------------------ (d) rising positivity

def count_once(value: dict[str, Any] | None, partition: int, offset: int
               ) -> dict[str, Any] | None:
    """Add one to a day counter unless this (partition, offset) was counted already (a
    redelivery after a crash); None when unchanged."""
    value = value or {"n": 0, "o": {}}
    done = value["o"].get(str(partition), -1)
    if offset <= done:
        return None
    return {"n": value["n"] + 1, "o": {**value["o"], str(partition): offset}}


def rising_positivity(found: Found, day: int, cfg: RegionConfig,
                      positives: Callable[[int], int], totals: Callable[[int], int],
                      evidence: uuid.UUID) -> Candidate | None:
    """Positives over the last `positivity_days` against the `positivity_baseline_days`
    before them: alarm when P(X >= recent positives | recent samples, baseline share)
    < `positivity_alpha` (one-sided binomial test)."""
    recent_days = range(day - cfg.positivity_days + 1, day + 1)
    base_days = range(day - cfg.positivity_days - cfg.positivity_baseline_days + 1,
                      day - cfg.positivity_days + 1)
    # Cheapest test first: most results of a region are not its third positive of the week,
    # and each day looked up is a table read (35 days, two reads each).
    x = sum(positives(d) for d in recent_days)
    if x < cfg.positivity_min_positives:
        return None
    n = sum(totals(d) for d in recent_days)
    base_n = sum(totals(d) for d in base_days)
    if n == 0 or base_n < POSITIVITY_MIN_BASELINE_SAMPLES:
        return None
    base_x = sum(positives(d) for d in base_days)
    p0 = max(base_x, 0.5) / base_n  # a zero baseline share still gives a finite test
    if x / n <= p0:
        return None
    p_value = float(binom.sf(x - 1, n, p0))
    if p_value >= cfg.positivity_alpha:
        return None
    severity: Severity = ("critical" if p_value < cfg.positivity_alpha / 100 and x / n >= 2 * p0
                          else "warning")
    return Candidate("rising_positivity", found, severity, (evidence,), sample_count=x)
