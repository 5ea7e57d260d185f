"""Read-model data for the dashboard's tests and its page benchmark, applied through the
dashboard's own consumer (`consumer.apply_event`), as the worker would apply the events:

Applied through `consumer.apply_batch`, as the worker applies a batch of records:
- drug-checking results: real rows of the Drug Checking BC export, parsed and normalized by
  ingest's own code (parse_csv, build_result_event), moved in time so the latest is today;
- overdose reports: synthetic, over Florida's 67 counties (one ZIP each), a seeded random;
- signals (a spike and a contamination signal in one county: concordance), alerts (a draft
  waiting, an approved and sent one with deliveries, a rejected one), referrals, site names.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

from pydantic import BaseModel

from services.dashboard import consumer
from services.ingest.csv_import import parse_csv
from services.ingest.service.drug_checks import build_result_event
from shared.events import (
    AlertChangedV1,
    ContaminationSignalV1,
    DrugCheckResultV1,
    OverdoseReportV1,
    ReferralEventV1,
    SiteKeyChangedV1,
    SpikeSignalV1,
)
from shared.regions import by_postal_code
from shared.settings import REPO_ROOT
from shared.topics import (
    ALERT_EVENTS,
    DRUGCHECK_RESULTS,
    OVERDOSE_REPORTS,
    REFERRAL_EVENTS,
    SIGNALS,
    SITE_KEYS,
)

BC_EXPORT = REPO_ROOT.parent / "shared" / "data" / "drugcheckingbc-2018-2020.csv"
NS = uuid.UUID("5e1d7c1e-0d2a-4c55-9a52-6f1f1f0da5b0")
SOURCES = ("ems", "ems", "ems", "ed", "ed", "outreach", "peer", "medical_examiner")
TOPIC = {DrugCheckResultV1: DRUGCHECK_RESULTS.name, OverdoseReportV1: OVERDOSE_REPORTS.name,
         SpikeSignalV1: SIGNALS.name, ContaminationSignalV1: SIGNALS.name,
         AlertChangedV1: ALERT_EVENTS.name, ReferralEventV1: REFERRAL_EVENTS.name,
         SiteKeyChangedV1: SITE_KEYS.name}


def _id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(NS, "/".join(map(str, parts)))


# One ZIP code per Florida county (67), the first STANDARD one of each county in the
# zipcodes package, counties in alphabetical order (Alachua ... Washington).
FLORIDA_ZIPS = (
    "32601", "32040", "32401", "32044", "32754", "33004", "32421", "33946", "34428", "32003",
    "34102", "32024", "34266", "32628", "32099", "32501", "32110", "32320", "32324", "32619",
    "33471", "32456", "32052", "33834", "33440", "34601", "33825", "33510", "32425", "32948",
    "32420", "32336", "32066", "32102", "33900", "32301", "32621", "32321", "32059", "34201",
    "32113", "33455", "33010", "33036", "32009", "32531", "34972", "32703", "34739", "33401",
    "33523", "33701", "33801", "32112", "32561", "34223", "32701", "32033", "34945", "32162",
    "32008", "32347", "32054", "32114", "32327", "32433", "32427")


@cache
def _bc_events(days: int) -> tuple[DrugCheckResultV1, ...]:
    """The export's rows of its last `days` days (lines of older dates are not parsed: the
    export is sorted newest first and starts with its ISO date)."""
    lines = BC_EXPORT.read_text(encoding="utf-8").splitlines(keepends=True)
    last = date.fromisoformat(lines[1][1:11])
    since = (last - timedelta(days=days)).isoformat()
    keep = [lines[0], *(line for line in lines[1:] if line[1:11] > since)]
    _, rows = parse_csv("".join(keep), province="BC")
    sites: dict[str, uuid.UUID] = {}
    out = []
    for row in rows:
        if row.body is None:
            continue
        site = sites.setdefault(row.body.collection_site or "BC", _id("site", len(sites)))
        out.append(build_result_event(row.body, site, _id("result", row.line),
                                      _id("result-event", row.line)))
    return tuple(out)


def bc_results(now: datetime, days: int) -> list[DrugCheckResultV1]:
    """The export's last `days` days of results, moved so its last day is yesterday."""
    events = _bc_events(days)
    last = max(e.collected_at for e in events)
    shift = (now - timedelta(days=1)) - last
    return [e.model_copy(update={"collected_at": e.collected_at + shift,
                                 "tested_at": e.tested_at + shift if e.tested_at else None})
            for e in events]


def site_names(results: list[DrugCheckResultV1], now: datetime) -> list[SiteKeyChangedV1]:
    names = {e.site_id: e.collection_site or "BC site" for e in results}
    return [SiteKeyChangedV1(producer="seed", key_id=_id("key", sid), site_id=sid,
                             site_name=name[:200], key_hash="0" * 64, scopes=["results"],
                             created_at=now - timedelta(days=400), occurred_at=now
                             - timedelta(days=400)) for sid, name in names.items()]


def overdose_reports(now: datetime, n: int, days: int, seed: int = 13) -> list[OverdoseReportV1]:
    rng = random.Random(seed)
    zips = FLORIDA_ZIPS
    weights = [1 + (i % 7) * 2 for i in range(len(zips))]  # some counties busier
    regions = {z: by_postal_code(z) for z in zips}
    out = []
    for i in range(n):
        z = rng.choices(zips, weights)[0]
        at = now - timedelta(days=rng.random() * days)
        region = regions[z]
        out.append(OverdoseReportV1(
            event_id=_id("report-event", seed, i), producer="seed",
            report_id=_id("report", seed, i), source=rng.choice(SOURCES), occurred_at=at,
            region_id=region.id, region_name=region.name,
            fatal="yes" if rng.random() < 0.08 else "no",
            naloxone_doses=rng.choice((None, 1, 2, 3)),
            suspected_substance_ids=rng.choice(([], ["fentanyl"], ["fentanyl", "xylazine"]))))
    return out


@dataclass
class Seeded:
    """Ids the tests look for."""

    draft_id: uuid.UUID
    sent_id: uuid.UUID
    rejected_id: uuid.UUID
    region_id: str
    region_name: str
    counts: dict[str, int] = field(default_factory=dict)


def alert_change(alert_id: uuid.UUID, n: int, at: datetime, action: str, status: str,
                 region_id: str, region_name: str, signals: list[uuid.UUID], *,
                 created_at: datetime, actor: str = "system", severity: str = "critical",
                 approved_by: str | None = None, deliveries: dict[str, int] | None = None,
                 substance_id: str | None = "fentanyl",
                 texts: dict[str, str] | None = None) -> AlertChangedV1:
    texts = texts or {
        "en": f"Lookout ALERT ({severity}): fentanyl found in {region_name}. Do not use "
              "alone, carry naloxone. Reply STOP to cancel.",
        "es": f"ALERTA Lookout ({severity}): fentanilo hallado en {region_name}. No use "
              "solo. Responda STOP para cancelar."}
    return AlertChangedV1(
        event_id=_id("alert-event", alert_id, n), producer="seed", alert_id=alert_id,
        occurred_at=at, action=action, actor=actor, status=status, kind="alert",
        severity=severity, region_id=region_id, region_name=region_name,
        substance_id=substance_id, texts=texts, segments={k: 1 for k in texts},
        signal_event_ids=signals, review_reason="severity" if status == "draft" else None,
        audience=40, deliveries=deliveries or {}, created_at=created_at,
        approved_at=at if approved_by else None, approved_by=approved_by,
        expires_at=created_at + timedelta(hours=72))


def story(now: datetime, zip_code: str = "33101",
          evidence: tuple[list[uuid.UUID], list[uuid.UUID]] = ([], [])
          ) -> tuple[list[BaseModel], Seeded]:
    """Signals, alerts and referrals around one county (Miami-Dade by default);
    `evidence`: the event ids of samples and of reports the signals point at."""
    region = by_postal_code(zip_code)
    events: list[BaseModel] = []
    spike = SpikeSignalV1(
        event_id=_id("spike", zip_code), producer="seed", region_id=region.id,
        region_name=region.name, severity="critical", occurred_at=now - timedelta(hours=3),
        window_start=now - timedelta(hours=27), window_end=now - timedelta(hours=3),
        observed=14, expected=4.2, upperbound=9.1, method="ears_c2", score=3.4,
        evidence_event_ids=evidence[1])
    contamination = ContaminationSignalV1(
        event_id=_id("contamination", zip_code), producer="seed",
        pattern="unexpected_adulterant", region_id=region.id, region_name=region.name,
        severity="critical", occurred_at=now - timedelta(hours=2), substance_id="fentanyl",
        substance_name="Fentanyl", sold_as_id="cocaine", sold_as_name="Cocaine",
        identified_by=["ftir"], evidence_event_ids=evidence[0])
    older = ContaminationSignalV1(
        event_id=_id("older", zip_code), producer="seed", pattern="novel_substance",
        region_id=region.id, region_name=region.name, severity="warning",
        occurred_at=now - timedelta(days=20), substance_id="xylazine",
        substance_name="Xylazine")
    events += [spike, contamination, older]
    draft, sent, rejected = _id("draft", zip_code), _id("sent", zip_code), _id("rej", zip_code)
    t_draft = now - timedelta(minutes=45)
    events.append(alert_change(draft, 0, t_draft, "create", "draft", region.id, region.name,
                               [contamination.event_id, spike.event_id], created_at=t_draft))
    t_sent = now - timedelta(days=20)
    for n, (action, status, deliveries, actor) in enumerate((
            ("create", "draft", {}, "system"),
            ("approve", "approved", {}, "dr-rivera"),
            ("sending", "sending", {"queued": 40}, "system"),
            ("deliveries", "sent", {"sent": 6, "delivered": 32, "failed": 2}, "system"))):
        events.append(alert_change(
            sent, n, t_sent + timedelta(minutes=4 * n), action, status, region.id,
            region.name, [older.event_id], created_at=t_sent, actor=actor,
            severity="warning", substance_id="xylazine",
            approved_by="dr-rivera" if n else None, deliveries=deliveries))
    t_rej = now - timedelta(days=9)
    events.append(alert_change(rejected, 0, t_rej, "create", "draft", region.id, region.name,
                               [older.event_id], created_at=t_rej, severity="warning"))
    events.append(alert_change(rejected, 1, t_rej + timedelta(minutes=20), "reject",
                               "rejected", region.id, region.name, [older.event_id],
                               created_at=t_rej, actor="dr-chen", severity="warning"))
    for i in range(30):
        rid, t = _id("referral", zip_code, i), now - timedelta(days=i * 2, hours=5)
        steps = ["requested", "options_sent", "chosen", "provider_notified", "connected"]
        steps = steps[: 1 + (i % 5)] if i % 6 else ["requested", "options_sent", "declined"]
        for k, status in enumerate(steps):
            events.append(ReferralEventV1(
                event_id=_id("referral-event", zip_code, i, k), producer="seed",
                referral_id=rid, status=status,
                occurred_at=t + timedelta(minutes=25 * k), source="sms",
                region_id=region.id, service_types=["buprenorphine"]))
    return events, Seeded(draft_id=draft, sent_id=sent, rejected_id=rejected,
                          region_id=region.id, region_name=region.name)


def apply(url: str, events: list[BaseModel], now: datetime | None = None,
          changes: bool = False) -> int:
    """Apply events to the read model at `url` in one transaction, as the worker does with
    a batch of records (`consumer.apply_batch`)."""
    published = now or datetime.now(UTC)
    batch = [(consumer.Record(TOPIC[type(e)], b"", published), e) for e in events]
    return consumer.apply_batch(url, batch, changes)


def forget_parsed_export() -> None:
    """Drop the parsed export kept for the next seed (the tests seed many databases): a
    benchmark that serves pages afterwards must not carry it, a dashboard process never does."""
    _bc_events.cache_clear()


def seed(url: str, now: datetime, *, bc_days: int = 28, reports: int = 600,
         report_days: int = 28) -> Seeded:
    """A read model with every page's data: `bc_days` of the BC export, `reports`
    synthetic overdose reports over the last `report_days` days, and the story."""
    results = bc_results(now, bc_days)
    synthetic = overdose_reports(now, reports, report_days)
    events: list[BaseModel] = [*site_names(results, now), *results, *synthetic]
    fentanyl = [e.event_id for e in results
                if any(s.substance_id == "fentanyl" for s in e.substances)][:3]
    story_events, seeded = story(now, evidence=(fentanyl, [e.event_id for e in synthetic[:5]]))
    apply(url, [*events, *story_events], now)
    seeded.counts = {"results": len(results), "reports": reports}
    return seeded


def bc_export_present() -> bool:
    return Path(BC_EXPORT).exists()
