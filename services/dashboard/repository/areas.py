"""The map: recent counts and open signals per county and per postal code."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.aggregates import county_of
from services.dashboard.repository.common import (
    SEVERITY_RANK,
    day_range,
    not_canary,
    region_label,
)
from services.dashboard.repository.now import open_signals


@dataclass(frozen=True)
class MapArea:
    region_id: str  # a county (state/county) or a postal code
    name: str
    level: Literal["county", "postal_code"]
    reports: int
    results: int
    open_signals: int
    worst_severity: str | None


Level = Literal["county", "postal_code"]


def _recent_counts(session: Session, now: datetime, days: int
                   ) -> tuple[Counter[str], Counter[str], dict[str, str]]:
    """Reports and samples per postal code (region) since `now - days`, and the regions'
    names: whole days from the daily aggregates, the first (partial) day from the rows."""
    since = now - timedelta(days=days)
    first_whole = since.date() + timedelta(days=1)
    _, first_end = day_range(since.date(), since.date(), since.tzinfo)
    reports: Counter[str] = Counter()
    results: Counter[str] = Counter()
    for counter, query in (
            (reports, select(models.ReportDay.region_id, func.sum(models.ReportDay.reports))
             .where(models.ReportDay.day >= first_whole).group_by(models.ReportDay.region_id)),
            (results, select(models.SampleDay.region_id, func.sum(models.SampleDay.samples))
             .where(models.SampleDay.day >= first_whole).group_by(models.SampleDay.region_id)),
            (reports, select(models.Report.region_id, func.count())
             .where(models.Report.occurred_at >= since, models.Report.occurred_at < first_end)
             .group_by(models.Report.region_id)),
            (results, select(models.Result.region_id, func.count())
             .where(not_canary(models.Result), models.Result.collected_at >= since,
                    models.Result.collected_at < first_end)
             .group_by(models.Result.region_id))):
        for rid, n in session.execute(query):
            counter[rid] += int(n)
    names: dict[str, str] = {}
    if reports or results:
        for rid, name in session.execute(
                select(models.Region.region_id, models.Region.region_name)
                .where(models.Region.region_id.in_(set(reports) | set(results)))):
            names[rid] = name
    return reports, results, names


def map_areas(session: Session, now: datetime, days: int = 28
              ) -> dict[Level, list[MapArea]]:
    """Recent counts and open signals per county and per postal code (for ZIP centroids),
    from one read of the counts and one of the open signals."""
    by_region = _recent_counts(session, now, days)
    signals = open_signals(session, now)
    return {level: _areas(level, *by_region, signals) for level in ("county", "postal_code")}


def _areas(level: Level, region_reports: Counter[str], region_results: Counter[str],
           region_names: dict[str, str], open_now: list[models.Signal]) -> list[MapArea]:
    reports: Counter[str] = Counter()
    results: Counter[str] = Counter()
    names: dict[str, str] = {}
    for source, counter in ((region_reports, reports), (region_results, results)):
        for rid, n in source.items():
            key = county_of(rid) if level == "county" else rid
            counter[key] += n
            names.setdefault(key, region_label(key) if level == "county"
                             else region_names.get(rid, rid))
    signals: dict[str, list[str]] = defaultdict(list)
    for s in open_now:
        rid = s.county_id if level == "county" else s.region_id
        signals[rid].append(s.severity)
        names.setdefault(rid, s.region_name if level == "postal_code" else region_label(rid))
    return [MapArea(region_id=rid, name=names[rid], level=level, reports=reports[rid],
                    results=results[rid], open_signals=len(signals[rid]),
                    worst_severity=max(signals[rid], key=lambda v: SEVERITY_RANK.get(v, 0))
                    if signals[rid] else None)
            for rid in sorted(set(reports) | set(results) | set(signals))]


def map_data(session: Session, now: datetime, days: int = 28,
             level: Level = "county") -> list[MapArea]:
    """Recent counts and open signals per county (or per postal code)."""
    return map_areas(session, now, days)[level]
