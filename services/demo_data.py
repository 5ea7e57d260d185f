"""Demo data for the dashboard (`lookout seed`, `make run`): three weeks of the Drug Checking
BC export moved to the last three weeks (through ingest's CSV import path), four weeks of
synthetic overdose reports in King County with a bump on the last day, and one sample whose
signal waits for review (a novel substance that is just what it was sold as: review, even in
dev). Everything goes through ingest's tables and outbox, so the relay, detection, alerts
and the dashboard's worker see it as they would see a site's submissions.

Seeded once: a second run finds the demo import site and adds nothing.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from services.ingest.csv_import import parse_csv
from services.ingest.models import DrugCheck, Site
from services.ingest.schemas import DrugCheckIn, OverdoseReportIn
from services.ingest.service.common import Caller
from services.ingest.service.drug_checks import submit_drug_checks
from services.ingest.service.reports import submit_overdose_reports
from services.ingest.service.sites import create_site
from shared.db import session_scope, utcnow
from shared.events import ContaminationSignalV1
from shared.kafka import make_producer
from shared.regions import by_postal_code
from shared.settings import REPO_ROOT, Settings
from shared.topics import SIGNALS

BC_EXPORT = REPO_ROOT.parent / "shared" / "data" / "drugcheckingbc-2018-2020.csv"
IMPORT_SITE = "Drug Checking BC (demo import)"
EMS_SITE = "King County EMS (synthetic demo)"
WEEKS = 3
KING_COUNTY_ZIPS = ("98101", "98102", "98103", "98104", "98105", "98122")
DRAFT_SAMPLE = "demo-medetomidine-1"
DRAFT_POSTAL_CODE = "98122"
DRAFT_SIGNAL_ID = uuid.uuid5(uuid.NAMESPACE_URL, "lookout:demo:draft-signal")


@dataclass(frozen=True)
class DemoData:
    results: int
    reports: int
    seeded: bool  # False: it was there already


def shifted_bc_csv(path: Path, weeks: int, last_day: date) -> str:
    """The export's most recent `weeks` weeks, dated so that its last day is `last_day`."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    newest = max(date.fromisoformat(r[0]) for r in body)
    first = newest - timedelta(weeks=weeks) + timedelta(days=1)
    shift = last_day - newest
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    for row in body:
        day = date.fromisoformat(row[0])
        if day >= first:
            writer.writerow([(day + shift).isoformat(), *row[1:]])
    return out.getvalue()


def synthetic_reports(now: datetime, days: int = 28) -> list[OverdoseReportIn]:
    """About three reports a day over the King County ZIPs, then eight in 98104 on the last
    day (a spike for detection); a fixed seed, so every run makes the same ones."""
    rng = random.Random(13)
    reports = []
    for d in range(days, 1, -1):
        for _ in range(rng.choice((1, 2, 3, 3, 4))):
            at = now - timedelta(days=d, minutes=rng.randrange(0, 24 * 60))
            reports.append(OverdoseReportIn.model_validate({
                "source": rng.choice(("ems", "ems", "ed", "outreach")), "occurred_at": at,
                "location": {"postal_code": rng.choice(KING_COUNTY_ZIPS)},
                "fatal": rng.choice(("no", "no", "no", "no", "yes", "unknown")),
                "naloxone_doses": rng.choice((1, 2, 2, 3)),
                "suspected_substances": rng.choice((["fentanyl"], [],
                                                    ["fentanyl", "xylazine"]))}))
    for i in range(8):
        reports.append(OverdoseReportIn.model_validate({
            "source": "ems", "occurred_at": now - timedelta(hours=20 - 2 * i),
            "location": {"postal_code": "98104"}, "fatal": "yes" if i == 3 else "no",
            "naloxone_doses": 3, "suspected_substances": ["fentanyl"]}))
    return reports


def draft_sample(now: datetime) -> DrugCheckIn:
    return DrugCheckIn.model_validate({
        "sample_id": DRAFT_SAMPLE, "collected_at": (now - timedelta(hours=3)).isoformat(),
        "location": {"postal_code": DRAFT_POSTAL_CODE}, "sold_as": "medetomidine",
        "form": "powder", "methods": ["ftir"],
        "substances": [{"name": "Medetomidine", "method": "ftir", "confidence": 0.92}]})


def seed_dashboard_data(settings: Settings, now: datetime | None = None) -> DemoData:
    now = now or utcnow()
    with session_scope(settings.sqlalchemy_url) as session:
        if session.scalar(select(Site.id).where(Site.name == IMPORT_SITE)) is not None:
            return DemoData(0, 0, seeded=False)
        bc_site, _key = create_site(session, IMPORT_SITE, ["results"])
        ems_site, _key = create_site(session, EMS_SITE, ["results", "reports"])
        bc = Caller(site_id=bc_site.id, scopes=("results",))
        ems = Caller(site_id=ems_site.id, scopes=("results", "reports"))
        _fmt, rows = parse_csv(shifted_bc_csv(BC_EXPORT, WEEKS,
                                              (now - timedelta(days=1)).date()))
        bodies = [row.body for row in rows if row.body is not None]
        results = [o for o in submit_drug_checks(session, bc, bodies) if o.status == "accepted"]
        reports = synthetic_reports(now)
        outcomes = submit_overdose_reports(session, ems, reports,
                                           [f"demo-od-{i}" for i in range(len(reports))])
        submit_drug_checks(session, ems, [draft_sample(now)])
        return DemoData(len(results) + 1, sum(o.status == "accepted" for o in outcomes), True)


def draft_signal(settings: Settings) -> ContaminationSignalV1 | None:
    """The demo's novel-as-sold signal, from the seeded sample (None: not seeded)."""
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.execute(select(DrugCheck.event_id, DrugCheck.collected_at)
                              .where(DrugCheck.sample_id == DRAFT_SAMPLE)).first()
    if row is None:
        return None
    region = by_postal_code(DRAFT_POSTAL_CODE)
    return ContaminationSignalV1(
        producer="demo", event_id=DRAFT_SIGNAL_ID, pattern="novel_substance",
        region_id=region.id, region_name=region.name, severity="warning",
        occurred_at=row[1].astimezone(UTC), evidence_event_ids=[row[0]],
        substance_id="medetomidine", substance_name="Medetomidine",
        sold_as_id="medetomidine", sold_as_name="Medetomidine", identified_by=["ftir"])


async def publish_draft_signal(settings: Settings) -> bool:
    """Put the demo's signal on signals.v1 (the alerts worker makes its draft; the same
    event id every time, so it is one draft however often this runs)."""
    signal = draft_signal(settings)
    if signal is None:
        return False
    producer: AIOKafkaProducer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(SIGNALS.name, signal.model_dump_json().encode(),
                                     key=signal.region_id.encode())
    finally:
        await producer.stop()
    return True
