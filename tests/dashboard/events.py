"""A small story of events for the dashboard's read model: two sites, results (one of them
a canary), overdose reports, a spike and a contamination signal in King County, a draft
alert and a sent one, a canary alert, referrals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from services.dashboard.consumer import Record
from shared.events import (
    AlertChangedV1,
    ContaminationSignalV1,
    DetectedSubstanceV1,
    DrugCheckResultV1,
    OverdoseReportV1,
    ReferralEventV1,
    ReferralStatus,
    Severity,
    SiteKeyChangedV1,
    SpikeSignalV1,
)
from shared.topics import (
    ALERT_EVENTS,
    DRUGCHECK_RESULTS,
    OVERDOSE_REPORTS,
    REFERRAL_EVENTS,
    SIGNALS,
    SITE_KEYS,
)

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
ZIP = "us/wa/king-county/98104"
ZIP_NAME = "98104 (Seattle, WA)"
OTHER_ZIP = "us/wa/king-county/98105"
SITE = uuid.UUID(int=1)
SITE_2 = uuid.UUID(int=2)


def _fentanyl(method: str = "ftir") -> DetectedSubstanceV1:
    return DetectedSubstanceV1(raw="Fentanyl HCl", substance_id="fentanyl", status="recognized",
                               substance_class="opioid", risk=3, method=method, confidence=0.9)


def _cocaine() -> DetectedSubstanceV1:
    return DetectedSubstanceV1(raw="Cocaine HCl", substance_id="cocaine", status="recognized",
                               substance_class="stimulant", risk=1)


def result(at: datetime, *, fentanyl: bool = True, canary: bool = False, site: uuid.UUID = SITE,
           region: str = ZIP) -> DrugCheckResultV1:
    substances = [_cocaine(), _fentanyl()] if fentanyl else [_cocaine()]
    return DrugCheckResultV1(
        producer="test", result_id=uuid.uuid4(), site_id=site, sample_id=uuid.uuid4().hex[:8],
        collected_at=at, region_id=region, region_name=ZIP_NAME, sold_as_raw="coke",
        sold_as_id="cocaine", sold_as_class="stimulant", form="powder", methods=["ftir"],
        substances=substances, strips={"fentanyl": "positive" if fentanyl else "negative"},
        adverse_reaction=fentanyl, canary=canary)


def report(at: datetime, *, fatal: str = "no", region: str = ZIP) -> OverdoseReportV1:
    return OverdoseReportV1(producer="test", report_id=uuid.uuid4(), source="ems",
                            occurred_at=at, region_id=region, region_name=ZIP_NAME, fatal=fatal,
                            naloxone_doses=2, suspected_substance_ids=["fentanyl"], site_id=SITE_2)


def alert_event(alert_id: uuid.UUID, at: datetime, action: str, status: str, *,
                signals: list[uuid.UUID], actor: str = "system", severity: Severity = "warning",
                approved_by: str | None = None, deliveries: dict[str, int] | None = None,
                review_reason: str | None = None, canary: bool = False,
                created_at: datetime | None = None) -> AlertChangedV1:
    return AlertChangedV1(
        producer="test", alert_id=alert_id, occurred_at=at, action=action, actor=actor,
        status=status, kind="canary" if canary else "alert",
        severity=severity,
        region_id=ZIP, region_name=ZIP_NAME, substance_id="fentanyl",
        texts={"en": "Fentanyl found in cocaine in 98104. Reply STOP to opt out."},
        segments={"en": 1}, signal_event_ids=signals, review_reason=review_reason,
        audience=40, deliveries=deliveries or {}, created_at=created_at or at,
        approved_at=at if approved_by else None, approved_by=approved_by,
        expires_at=at + timedelta(hours=72), canary=canary)


def story() -> list[tuple[str, BaseModel, datetime]]:
    """(topic, event, published at) in the order they would arrive."""
    day = NOW - timedelta(days=1)
    out: list[tuple[str, BaseModel, datetime]] = []

    def add(topic: str, event: BaseModel, at: datetime) -> None:
        out.append((topic, event, at))

    add(SITE_KEYS.name, SiteKeyChangedV1(
        producer="test", key_id=uuid.uuid4(), site_id=SITE, site_name="Harbor Drug Checking",
        key_hash="0" * 64, scopes=["results"], created_at=day - timedelta(days=30),
        occurred_at=day - timedelta(days=30)), day - timedelta(days=30))
    # Three weeks of reports: ~1 a day, then 6 on the last day (a spike).
    for d in range(21, 1, -1):
        at = NOW - timedelta(days=d, hours=-1)
        add(OVERDOSE_REPORTS.name, report(at), at)
    spike_reports = [report(day + timedelta(hours=h), fatal="yes" if h == 0 else "no")
                     for h in range(6)]
    for rep in spike_reports:
        add(OVERDOSE_REPORTS.name, rep, rep.occurred_at)
    results = [result(day - timedelta(days=3), fentanyl=False), result(day),
               result(day + timedelta(hours=1))]
    for res in results:
        add(DRUGCHECK_RESULTS.name, res, res.collected_at + timedelta(seconds=5))
    spike = SpikeSignalV1(
        producer="test", region_id=ZIP, region_name=ZIP_NAME, severity="warning",
        occurred_at=day + timedelta(hours=5),
        evidence_event_ids=[r.event_id for r in spike_reports], window_start=day,
        window_end=day + timedelta(days=1), observed=6, expected=1.1, upperbound=3.9,
        method="poisson", score=5.2)
    add(SIGNALS.name, spike, day + timedelta(hours=5, seconds=2))
    contamination = ContaminationSignalV1(
        producer="test", region_id=ZIP, region_name=ZIP_NAME, severity="warning",
        pattern="unexpected_adulterant", occurred_at=day + timedelta(hours=1),
        evidence_event_ids=[results[1].event_id, results[2].event_id],
        substance_id="fentanyl", substance_name="Fentanyl", sold_as_id="cocaine",
        sold_as_name="Cocaine", sample_count=2, identified_by=["ftir"])
    add(SIGNALS.name, contamination, day + timedelta(hours=1, seconds=10))
    # The contamination signal's alert waits for review.
    draft = uuid.UUID(int=100)
    t0 = day + timedelta(hours=1, seconds=11)
    add(ALERT_EVENTS.name, alert_event(draft, t0, "create", "draft",
                                       signals=[contamination.event_id],
                                       review_reason="severity"), t0)
    # The spike's alert: reviewed, approved, sent, delivered (counts moving).
    sent = uuid.UUID(int=101)
    t1 = day + timedelta(hours=5, seconds=3)
    add(ALERT_EVENTS.name, alert_event(sent, t1, "create", "draft", signals=[spike.event_id],
                                       review_reason="severity"), t1)
    t2 = t1 + timedelta(minutes=12)
    for i, (action, status, deliveries) in enumerate((
            ("approve", "approved", {}), ("sending", "sending", {}),
            ("deliveries", "sending", {"pending": 30, "queued": 10}),
            ("deliveries", "sending", {"queued": 10, "delivered": 30}),
            ("sent", "sent", {"delivered": 39, "failed": 1}))):
        at = t2 + timedelta(seconds=i)
        add(ALERT_EVENTS.name, alert_event(
            sent, at, action, status, signals=[spike.event_id], actor="dr-lee",
            approved_by="dr-lee", deliveries=deliveries, created_at=t1), at)
    # A smoke round trip: canary result -> canary signal -> canary alert -> first SMS.
    smoke_at = NOW - timedelta(hours=2)
    canary = result(smoke_at, canary=True)
    add(DRUGCHECK_RESULTS.name, canary, smoke_at)
    canary_signal = ContaminationSignalV1(
        producer="test", region_id=ZIP, region_name=ZIP_NAME, severity="critical",
        pattern="unexpected_adulterant", occurred_at=smoke_at,
        evidence_event_ids=[canary.event_id], substance_id="fentanyl",
        substance_name="Fentanyl", canary=True)
    add(SIGNALS.name, canary_signal, smoke_at + timedelta(seconds=1))
    test_alert = uuid.UUID(int=102)
    for i, (action, deliveries) in enumerate((("create", {}), ("deliveries", {"queued": 1}))):
        at = smoke_at + timedelta(seconds=2 + i)
        add(ALERT_EVENTS.name, alert_event(
            test_alert, at, action, "sending" if i else "approved",
            signals=[canary_signal.event_id], approved_by="policy:canary", canary=True,
            severity="critical", deliveries=deliveries, created_at=smoke_at
            + timedelta(seconds=2)), at)
    # Referrals: one connected after 2 hours, one declined.
    paths: tuple[tuple[uuid.UUID, tuple[ReferralStatus, ...]], ...] = (
        (uuid.UUID(int=200), ("requested", "options_sent", "chosen", "provider_notified",
                              "connected")),
        (uuid.UUID(int=201), ("requested", "options_sent", "declined")))
    for rid, path in paths:
        for i, status in enumerate(path):
            at = day + timedelta(minutes=30 * i)
            add(REFERRAL_EVENTS.name, ReferralEventV1(
                producer="test", referral_id=rid, status=status,
                occurred_at=at, source="sms", region_id=ZIP,
                service_types=["treatment"]), at)
    return out


def records(items: list[tuple[str, BaseModel, datetime]]) -> list[tuple[Record, BaseModel]]:
    return [(Record(topic, event.model_dump_json().encode(), at), event)
            for topic, event, at in items]
