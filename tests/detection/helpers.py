"""Builders for detection tests: overdose reports and drug-check results with fixed ids, so
two runs over the same input are comparable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from shared.events import DetectedSubstanceV1, DrugCheckResultV1, OverdoseReportV1
from shared.substances import get_substance

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS = uuid.UUID("0b7f2a52-5a43-4c8e-8d8e-3a1f60f1a001")
KING = "us/wa/king-county/98104"


def report(n: int, at: datetime, region_id: str = KING) -> OverdoseReportV1:
    """Report number `n` (its ids derive from n)."""
    return OverdoseReportV1(
        event_id=uuid.uuid5(NS, f"report-{n}"), producer="test",
        report_id=uuid.uuid5(NS, f"report-id-{n}"), source="ems", occurred_at=at,
        region_id=region_id, region_name=f"{region_id.rsplit('/', 1)[-1]} (test)",
    )


def daily_reports(per_day: list[int], region_id: str = KING, start: datetime = T0,
                  first: int = 0) -> list[OverdoseReportV1]:
    out = []
    n = first
    for day, count in enumerate(per_day):
        for i in range(count):
            out.append(report(n, start + timedelta(days=day, minutes=10 * i + 1), region_id))
            n += 1
    return out


def result(n: int, at: datetime, found: list[str], region_id: str = KING, site: int = 0,
           sold_as: str | None = "cocaine", raw: list[str] | None = None) -> DrugCheckResultV1:
    """Result number `n` with catalog substances `found` (plus unrecognized `raw` names)."""
    subs = []
    for sid in found:
        s = get_substance(sid)
        subs.append(DetectedSubstanceV1(raw=s.name, substance_id=s.id, status="recognized",
                                        substance_class=s.cls.value, risk=s.risk))
    for name in raw or []:
        subs.append(DetectedSubstanceV1(raw=name, substance_id=None, status="unrecognized"))
    sold = get_substance(sold_as) if sold_as else None
    return DrugCheckResultV1(
        event_id=uuid.uuid5(NS, f"result-{n}"), producer="test",
        result_id=uuid.uuid5(NS, f"result-id-{n}"), site_id=uuid.uuid5(NS, f"site-{site}"),
        sample_id=f"s{n}", collected_at=at, region_id=region_id, region_name="test region",
        sold_as_raw=sold_as, sold_as_id=sold.id if sold else None,
        sold_as_class=sold.cls.value if sold else None, substances=subs,
    )


def every_pattern_stream() -> list[OverdoseReportV1 | DrugCheckResultV1]:
    """35 days in event-time order: overdoses in two ZIP codes (spikes on days 29 and 32)
    and drug-checking results in a third region raising every contamination pattern."""
    a = [1, 2, 1, 0, 1, 2, 1] * 5
    a[29] = 12
    b = [2] * 35
    b[32] = 11
    events: list[tuple[datetime, OverdoseReportV1 | DrugCheckResultV1]] = [
        (r.occurred_at, r) for r in daily_reports(a, KING)
        + daily_reports(b, "us/wa/king-county/98101", first=10_000)]
    n = 0
    for day in range(35):
        share = 1 if day < 28 else 5  # fentanyl positivity rises in the last week
        for i in range(6):
            found = ["cocaine", "fentanyl"] if i < share else ["cocaine"]
            if day == 30 and i < 3:
                found = ["heroin", "xylazine"]
            at = T0 + timedelta(days=day, hours=2 * i + 1)
            events.append((at, result(n, at, found, "us/or/multnomah-county/97201",
                                      site=i % 3,
                                      sold_as="heroin" if "heroin" in found else "cocaine")))
            n += 1
    events.sort(key=lambda pair: (pair[0], str(pair[1].event_id)))
    return [e for _, e in events]


COUNTY_ZIPS = [f"us/wa/king-county/981{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8)]


def county_history(days: int = 70, seed: int = 15) -> list[OverdoseReportV1]:
    """A county's overdose history over eight ZIP codes (spread over the partitions), in
    event-time order: one to four reports a day per ZIP at distinct minutes, and spikes in
    the whole county on a few days (from one ZIP or from all of them)."""
    import random

    rng = random.Random(seed)
    spikes = {40: None, 47: COUNTY_ZIPS[2], 55: None, 56: None, 63: COUNTY_ZIPS[5]}
    out: list[OverdoseReportV1] = []
    n = 0
    for day in range(days):
        for zip_code in COUNTY_ZIPS:
            count = rng.randint(0, 3)
            if day in spikes and spikes[day] in (None, zip_code):
                count += 6 if spikes[day] is None else 20
            for minute in rng.sample(range(1440), count):
                at = T0 + timedelta(days=day, minutes=minute, seconds=rng.randint(0, 59))
                out.append(report(20_000 + n, at, zip_code))
                n += 1
    out.sort(key=lambda r: (r.occurred_at, str(r.event_id)))
    return out
