"""Builders for detection tests: overdose reports and drug-check results with fixed ids, so
two runs over the same input are comparable, and the signals the processors give for them
(the reference the workers are held to)."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.detection.config import load_config
from services.detection.processors import Processor
from services.detection.tables import Tables
from shared.events import DetectedSubstanceV1, DrugCheckResultV1, OverdoseReportV1
from shared.settings import Settings
from shared.substances import get_substance
from testing.detection_worker import Event, by_id

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


def _bc_export() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[3] / "shared" / "data"
               / "drugcheckingbc-2018-2020.csv")


def bc_results(n: int) -> list[DrugCheckResultV1]:
    """The Drug Checking BC export's first `n` results in time order, as ingest makes them
    (fixed ids), in event-time order."""
    from services.ingest.csv_import import parse_csv
    from services.ingest.service.drug_checks import build_result_event

    with open(_bc_export(), encoding="utf-8") as f:
        lines = f.read().splitlines()
    # the file is newest first: its header and last rows are the oldest results
    _fmt, rows = parse_csv("\n".join([lines[0], *lines[-(n + 200):]]) + "\n")
    bodies = [row.body for row in rows if row.body is not None]
    bodies.reverse()
    bodies.sort(key=lambda b: b.collected_at)
    ns = uuid.UUID("8d5b3c1e-4f6a-4e2b-9c7d-15a0c0ffee15")
    out = [build_result_event(b, uuid.uuid5(ns, f"site-{b.collection_site}"),
                              uuid.uuid5(ns, f"result-{i}"), uuid.uuid5(ns, f"event-{i}"))
           for i, b in enumerate(bodies[:n])]
    out.sort(key=lambda r: (r.collected_at, str(r.event_id)))
    return out


STATES = {
    "us/wa/king-county": ["98101", "98102", "98103", "98104"],
    "us/wa/pierce-county": ["98402", "98403", "98404", "98405"],
    "us/or/multnomah-county": ["97201", "97202", "97203", "97204"],
    "us/id/ada-county": ["83702", "83704", "83706"],
}


def states_history(days: int, start: datetime, seed: int = 15) -> list[OverdoseReportV1]:
    """Overdose reports over four counties of three states, each over several postal codes,
    in event-time order: zero to two a day per postal code at distinct minutes, and spikes
    of a whole county, of one postal code, and of a whole state."""
    import random

    rng = random.Random(seed)
    spikes: dict[int, tuple[str, str | None]] = {
        days - 30: ("us/wa/king-county", None), days - 26: ("us/wa/pierce-county", "98403"),
        days - 21: ("us/or/multnomah-county", None), days - 16: ("us/wa", None),
        days - 11: ("us/id/ada-county", "83704"), days - 6: ("us/or/multnomah-county", "97202")}
    out: list[OverdoseReportV1] = []
    n = 0
    for day in range(days):
        for county, zips in STATES.items():
            for z in zips:
                count = rng.randint(0, 2)
                where, one = spikes.get(day, ("", None))
                if where and county.startswith(where) and one in (None, z):
                    count += 5 if one is None else 14
                for minute in rng.sample(range(1440), count):
                    at = start + timedelta(days=day, minutes=minute, seconds=rng.randint(0, 59))
                    out.append(report(50_000 + n, at, f"{county}/{z}"))
                    n += 1
    out.sort(key=lambda r: (r.occurred_at, str(r.event_id)))
    return out


@functools.cache
def states_and_bc_stream() -> list[Event]:
    """The first months of the BC export and overdose reports over four counties of three
    states in the same months, in event-time order (as a backfill publishes them). One list
    for the whole session: do not change it."""
    results = bc_results(900)
    events: list[Event] = [*states_history(70, results[0].collected_at), *results]
    events.sort(key=lambda e: (event_time(e), str(e.event_id)))
    return events


def event_time(e: Event) -> float:
    return (e.occurred_at if isinstance(e, OverdoseReportV1) else e.collected_at).timestamp()


def reference_signals(events: list[Event], **settings: Any) -> dict[str, dict[str, Any]]:
    """The signals of the processors on in-memory tables over `events` in their order (one
    partition), by event id; `settings` are `Settings` fields (env is "test")."""
    sent: list[dict[str, Any]] = []

    async def send(key: str, payload: str) -> None:
        sent.append(json.loads(payload))

    processor = Processor(load_config(Settings(env="test", **settings)), Tables.in_memory(),
                          send)

    async def go() -> None:
        for offset, event in enumerate(events):
            if isinstance(event, OverdoseReportV1):
                await processor.on_report(event, 0, offset)
            else:
                await processor.on_result(event, 0, offset)

    asyncio.run(go())
    return by_id(sent)
