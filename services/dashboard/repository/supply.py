"""Drug supply: samples by sold-as, what was found, positivity of high-risk substances (from
the daily aggregates `models.SampleDay`, `models.FoundDay`), and the line list."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.aggregates import substance_name
from services.dashboard.repository.common import (
    LINE_LIST_LIMIT,
    Bucket,
    SampleRow,
    bucket_of,
    day_range,
    in_region,
    not_canary,
    sample_row,
    site_names,
)


@dataclass(frozen=True)
class SoldAsRow:
    sold_as_id: str | None
    sold_as: str
    samples: int
    matched: int  # samples in which what it was sold as was found
    match_rate: float | None
    found: list[tuple[str, int]]  # substance name, samples it was found in (most first)
    high_risk_samples: int


@dataclass(frozen=True)
class PositivityPoint:
    start: date
    substance_id: str
    substance: str
    positive: int
    tested: int
    rate: float


@dataclass(frozen=True)
class DrugSupply:
    start: date
    end: date
    samples: int
    by_sold_as: list[SoldAsRow]
    positivity: list[PositivityPoint]
    line_list: list[SampleRow]


def drug_supply(session: Session, now: datetime, region_id: str | None = None,
                days: int = 90, start: date | None = None, end: date | None = None,
                bucket: Bucket = "week", line_limit: int = LINE_LIST_LIMIT) -> DrugSupply:
    """The figures come from the daily aggregates (`SampleDay`, `FoundDay`: a few rows per
    day and region, not every sample); full rows only for the line list's latest
    `line_limit`."""
    end = end or now.date()
    start = start or end - timedelta(days=days - 1)
    samples = 0
    per_sold_as: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, matched, hr
    tested: Counter[date] = Counter()
    for day, sold_as_id, n, matched, high in session.execute(
            select(models.SampleDay.day, models.SampleDay.sold_as_id,
                   func.sum(models.SampleDay.samples), func.sum(models.SampleDay.matched),
                   func.sum(models.SampleDay.high_risk))
            .where(in_region(region_id, models.SampleDay),
                   models.SampleDay.day >= start, models.SampleDay.day <= end)
            .group_by(models.SampleDay.day, models.SampleDay.sold_as_id)):
        counts = per_sold_as[sold_as_id]
        counts[0] += int(n)
        counts[1] += int(matched)
        counts[2] += int(high)
        samples += int(n)
        tested[bucket_of(day, bucket)] += int(n)
    found_in: dict[str, Counter[str]] = defaultdict(Counter)
    positive: Counter[tuple[date, str]] = Counter()
    found = (in_region(region_id, models.FoundDay), models.FoundDay.day >= start,
             models.FoundDay.day <= end)
    for sold_as_id, name, n in session.execute(
            select(models.FoundDay.sold_as_id, models.FoundDay.name,
                   func.sum(models.FoundDay.samples)).where(*found)
            .group_by(models.FoundDay.sold_as_id, models.FoundDay.name)):
        found_in[sold_as_id][name] += int(n)
    for day, sid, n in session.execute(
            select(models.FoundDay.day, models.FoundDay.substance_id,
                   func.sum(models.FoundDay.samples))
            .where(*found, models.FoundDay.high_risk.is_(true()))
            .group_by(models.FoundDay.day, models.FoundDay.substance_id)):
        positive[bucket_of(day, bucket), sid] += int(n)
    by_sold_as = [SoldAsRow(
        sold_as_id=sold_as_id or None,
        sold_as=substance_name(sold_as_id) if sold_as_id else "unknown / not given",
        samples=n, matched=matched, match_rate=matched / n if sold_as_id else None,
        found=found_in[sold_as_id].most_common(), high_risk_samples=high_risk)
        for sold_as_id, (n, matched, high_risk) in per_sold_as.items()]
    by_sold_as.sort(key=lambda r: -r.samples)
    positivity = [PositivityPoint(start=b, substance_id=sid, substance=substance_name(sid),
                                  positive=n, tested=tested[b], rate=n / tested[b])
                  for (b, sid), n in sorted(positive.items())]
    since, until = day_range(start, end, now.tzinfo)
    sites = site_names(session)
    line_list = [sample_row(r, sites) for r in session.scalars(
        select(models.Result).where(
            not_canary(models.Result), in_region(region_id, models.Result),
            models.Result.collected_at >= since, models.Result.collected_at < until)
        .order_by(models.Result.collected_at.desc()).limit(line_limit))]
    return DrugSupply(start=start, end=end, samples=samples, by_sold_as=by_sold_as,
                      positivity=positivity, line_list=line_list)
