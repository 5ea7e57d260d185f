"""The alert workbench: from the evidence to the SMS, for one alert."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.consumer import HANDED
from services.dashboard.repository.common import (
    CONCORDANCE_HOURS,
    ReportRow,
    SampleRow,
    SignalRow,
    not_canary,
    report_row,
    sample_row,
    signal_row,
    site_names,
)


@dataclass(frozen=True)
class AuditEntry:
    occurred_at: datetime
    action: str
    actor: str
    status: str
    deliveries: dict[str, int]


@dataclass(frozen=True)
class Funnel:
    audience: int
    created: int
    pending: int
    handed: int  # given to the SMS provider (queued and beyond)
    sent: int  # sent or delivered
    delivered: int
    failed: int  # failed or undelivered
    skipped: int
    by_status: dict[str, int]


def funnel_of(audience: int | None, deliveries: dict[str, int]) -> Funnel:
    d = deliveries
    created = sum(d.values())
    return Funnel(audience=audience if audience is not None else created, created=created,
                  pending=d.get("pending", 0) + d.get("sending", 0),
                  handed=sum(n for s, n in d.items() if s in HANDED and s != "sending"),
                  sent=d.get("sent", 0) + d.get("delivered", 0),
                  delivered=d.get("delivered", 0),
                  failed=d.get("failed", 0) + d.get("undelivered", 0),
                  skipped=d.get("skipped", 0), by_status=dict(d))


@dataclass(frozen=True)
class TimelineStep:
    step: str  # evidence, signal, draft, decision, first_sms, delivered
    at: datetime | None
    detail: str = ""


@dataclass(frozen=True)
class Workbench:
    alert_id: uuid.UUID
    status: str
    kind: str
    severity: str
    region_id: str
    region_name: str
    substance_id: str | None
    texts: dict[str, str]
    segments: dict[str, int]
    review_reason: str | None
    created_at: datetime
    approved_at: datetime | None
    approved_by: str | None
    expires_at: datetime | None
    parent_id: uuid.UUID | None
    canary: bool
    signals: list[SignalRow]
    spikes: list[SignalRow]
    samples: list[SampleRow]
    reports: list[ReportRow]
    concordance: bool  # a spike and a contamination signal hit the same county
    concordant_signals: list[SignalRow]
    audit: list[AuditEntry]
    funnel: Funnel
    timeline: list[TimelineStep]


def _concordant(session: Session, signals: Sequence[models.Signal]) -> list[models.Signal]:
    """Signals of the other kind (spike vs contamination) in the same county within
    CONCORDANCE_HOURS of one of these."""
    out: dict[uuid.UUID, models.Signal] = {}
    window = timedelta(hours=CONCORDANCE_HOURS)
    for s in signals:
        other = "contamination" if s.kind == "spike" else "spike"
        for match in session.scalars(select(models.Signal).where(
                not_canary(models.Signal), models.Signal.kind == other,
                models.Signal.county_id == s.county_id,
                models.Signal.published_at >= s.published_at - window,
                models.Signal.published_at <= s.published_at + window)):
            out[match.event_id] = match
    return sorted(out.values(), key=lambda s: s.published_at)


def workbench(session: Session, alert_id: uuid.UUID) -> Workbench | None:
    a = session.get(models.Alert, alert_id)
    if a is None:
        return None
    ids = [uuid.UUID(x) for x in a.signal_event_ids or []]
    signals = list(session.scalars(select(models.Signal).where(models.Signal.event_id.in_(ids))
                                   .order_by(models.Signal.published_at))) if ids else []
    evidence = [uuid.UUID(e) for s in signals for e in s.evidence_event_ids or []]
    sites = site_names(session)
    samples = [sample_row(r, sites) for r in session.scalars(
        select(models.Result).where(models.Result.event_id.in_(evidence))
        .order_by(models.Result.collected_at))] if evidence else []
    reports = [report_row(r) for r in session.scalars(
        select(models.Report).where(models.Report.event_id.in_(evidence))
        .order_by(models.Report.occurred_at))] if evidence else []
    concordant = _concordant(session, signals) if not a.canary else []
    audit = [AuditEntry(occurred_at=e.occurred_at, action=e.action, actor=e.actor,
                        status=e.status, deliveries=dict(e.deliveries or {}))
             for e in session.scalars(select(models.AlertEvent)
                                      .where(models.AlertEvent.alert_id == alert_id)
                                      .order_by(models.AlertEvent.occurred_at))]
    evidence_times = [r.published_at for r in session.scalars(
        select(models.Result).where(models.Result.event_id.in_(evidence)))] + \
        [r.published_at for r in session.scalars(
            select(models.Report).where(models.Report.event_id.in_(evidence)))] \
        if evidence else []
    decision = f"{a.decision} by {a.decided_by}" if a.decision else ""
    timeline = [
        TimelineStep("evidence", min(evidence_times) if evidence_times else None,
                     f"{len(samples)} sample(s), {len(reports)} report(s)"),
        TimelineStep("signal", signals[0].published_at if signals else None,
                     f"{len(signals)} signal(s)"),
        TimelineStep("draft", a.created_at, a.review_reason or ""),
        TimelineStep("decision", a.decided_at, decision),
        TimelineStep("first_sms", a.first_sms_at),
        TimelineStep("delivered", a.first_delivered_at),
    ]
    rows = [signal_row(s) for s in signals]
    return Workbench(
        alert_id=a.alert_id, status=a.status, kind=a.kind, severity=a.severity,
        region_id=a.region_id, region_name=a.region_name, substance_id=a.substance_id,
        texts=dict(a.texts or {}), segments=dict(a.segments or {}),
        review_reason=a.review_reason, created_at=a.created_at, approved_at=a.approved_at,
        approved_by=a.approved_by, expires_at=a.expires_at, parent_id=a.parent_id,
        canary=a.canary, signals=rows, spikes=[r for r in rows if r.kind == "spike"],
        samples=samples, reports=reports,
        concordance=bool(concordant),
        concordant_signals=[signal_row(s) for s in concordant], audit=audit,
        funnel=funnel_of(a.audience, dict(a.deliveries or {})), timeline=timeline)
