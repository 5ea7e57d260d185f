"""Trends: the region tree and the series per day or week, coloured as ESSENCE does, from the
daily aggregates (`models.ReportDay`, `models.SampleDay`)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import numpy as np
from scipy.stats import poisson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.repository.common import (
    Bucket,
    Colour,
    SignalRow,
    Source,
    bucket_of,
    in_region,
    not_canary,
    region_label,
    signal_row,
)


@dataclass
class RegionNode:
    region_id: str
    name: str
    level: Literal["state", "county", "postal_code"]
    count: int
    children: list[RegionNode] = field(default_factory=list)


def region_tree(session: Session) -> list[RegionNode]:
    """State -> county -> postal code, for every region with reports or results (the
    `dashboard_regions` aggregate: one row a region)."""
    names: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for rid, name, reports, results in session.execute(
            select(models.Region.region_id, models.Region.region_name, models.Region.reports,
                   models.Region.results)):
        if reports + results:
            names[rid] = name
            counts[rid] += reports + results
    states: dict[str, RegionNode] = {}
    counties: dict[str, RegionNode] = {}
    for rid in sorted(counts):
        parts = rid.split("/")
        state_id, county_id = "/".join(parts[:2]), "/".join(parts[:3])
        state = states.setdefault(state_id,
                                  RegionNode(state_id, region_label(state_id), "state", 0))
        state.count += counts[rid]
        if county_id == state_id:
            continue
        county = counties.get(county_id)
        if county is None:
            county = counties[county_id] = RegionNode(county_id, region_label(county_id),
                                                      "county", 0)
            state.children.append(county)
        county.count += counts[rid]
        if rid != county_id:
            county.children.append(RegionNode(rid, names[rid], "postal_code", counts[rid]))
    return list(states.values())


@dataclass(frozen=True)
class TrendPoint:
    start: date
    count: int
    expected: float | None
    upperbound: float | None
    p_value: float | None
    colour: Colour  # ESSENCE: red p < 0.01, yellow p < 0.05, blue, grey (no baseline)
    from_detector: bool  # expected/upper bound come from a spike signal's detector


@dataclass(frozen=True)
class Trend:
    region_id: str | None
    source: Source
    bucket: Bucket
    start: date
    end: date
    points: list[TrendPoint]
    signals: list[SignalRow]


BASELINE = {"day": (7, 2), "week": (8, 1)}  # buckets of baseline, and the guard gap (C2)


def _colour(p: float | None) -> Colour:
    if p is None:
        return "grey"
    return "red" if p < 0.01 else "yellow" if p < 0.05 else "blue"


def _p_values(pairs: list[tuple[int, float]]) -> list[float]:
    """P(X >= count) for Poisson counts of mean `expected` (floored: a zero baseline), in
    one call (scipy's per-call overhead is ~1 ms)."""
    if not pairs:
        return []
    counts, means = zip(*pairs, strict=True)
    return [float(p) for p in poisson.sf(np.array(counts) - 1,
                                         np.maximum(np.array(means, dtype=float), 0.1))]


def _pstdev(values: list[int]) -> float:
    n, total = len(values), sum(values)
    return math.sqrt(max(n * sum(v * v for v in values) - total * total, 0)) / n


def _counts(session: Session, source: Source, region_id: str | None, first: date, end: date,
            report_source: str | None, fatal: bool | None) -> tuple[dict[date, int],
                                                                    date | None]:
    """Per day in [first, end] (one sum per day from the daily aggregates), and the first
    day with any data of the region (whatever the filters)."""
    if source == "reports":
        model: Any = models.ReportDay
        n = func.sum(models.ReportDay.reports)
    else:
        model, n = models.SampleDay, func.sum(models.SampleDay.samples)
    where = [in_region(region_id, model)]
    q = select(model.day, n).where(*where, model.day >= first, model.day <= end) \
        .group_by(model.day)
    if source == "reports" and report_source:
        q = q.where(models.ReportDay.source == report_source)
    if source == "reports" and fatal is not None:
        q = q.where(models.ReportDay.fatal == ("yes" if fatal else "no"))
    daily = {day: int(count) for day, count in session.execute(q)}
    return daily, session.scalar(select(func.min(model.day)).where(*where))


def trends(session: Session, now: datetime, region_id: str | None = None,
           days: int = 28, start: date | None = None, end: date | None = None,
           bucket: Bucket = "day", source: Source = "reports",
           report_source: str | None = None, fatal: bool | None = None) -> Trend:
    """Counts per day or week of overdose reports (or drug-checking results) of a region and
    below, for the last `days` or [start, end]; each point with its expected value, upper
    bound and ESSENCE colour. Where a spike signal of the region covers the bucket, the
    detector's own expected and upper bound are used; elsewhere a C2-like baseline (the
    mean of the 7 days (8 weeks) before a 2-day (1-week) gap) and a Poisson p-value; grey
    until there is that much history."""
    end = end or now.date()
    start = start or end - timedelta(days=days - 1)
    baseline, gap = BASELINE[bucket]
    step = timedelta(days=7 if bucket == "week" else 1)
    first = bucket_of(start, bucket) - step * (baseline + gap)
    first_dt = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    end_dt = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    daily, earliest = _counts(session, source, region_id, first, end, report_source, fatal)
    counts: Counter[date] = Counter()
    for d, n in daily.items():
        counts[bucket_of(d, bucket)] += n
    spikes = [] if source != "reports" else list(session.scalars(
        select(models.Signal).where(not_canary(models.Signal), models.Signal.kind == "spike",
                                    in_region(region_id, models.Signal),
                                    models.Signal.window_end >= first_dt,
                                    models.Signal.window_start < end_dt)
        .order_by(models.Signal.published_at)))
    rows: list[tuple[date, int, float | None, float | None, bool]] = []
    day = bucket_of(start, bucket)
    while day <= end:
        count = counts.get(day, 0)
        detector = next((s for s in reversed(spikes) if s.region_id == (region_id or s.region_id)
                         and s.window_start is not None and s.window_end is not None
                         and bucket_of(s.window_start.date(), bucket) == day), None)
        history_from = day - step * (baseline + gap)
        expected: float | None
        upper: float | None
        if detector is not None and detector.expected is not None:
            expected, upper = detector.expected, detector.upperbound
        elif earliest is None or earliest > history_from:
            expected = upper = None
        else:
            window = [counts.get(day - step * (gap + i), 0) for i in range(1, baseline + 1)]
            expected = statistics.fmean(window)
            upper = expected + 3 * max(_pstdev(window), math.sqrt(max(expected, 0.1)))
        rows.append((day, count, expected, upper, detector is not None))
        day += step
    p_values = iter(_p_values([(c, e) for _d, c, e, _u, _f in rows if e is not None]))
    points = []
    for day, count, expected, upper, from_detector in rows:
        p = next(p_values) if expected is not None else None
        points.append(TrendPoint(start=day, count=count, expected=expected, upperbound=upper,
                                 p_value=p, colour=_colour(p), from_detector=from_detector))
    return Trend(region_id=region_id, source=source, bucket=bucket, start=start, end=end,
                 points=points, signals=[signal_row(s) for s in spikes])
