"""What every dashboard page shares: the rows of signals, alerts, samples and reports,
the region and canary filters. Each page's reads are in a module of their own; every
function reads the dashboard's own tables only and returns plain dataclasses.

Canary (smoke) traffic never counts in figures: every query leaves `canary` rows out,
except the Now page's last smoke round trip, which reads only them.
Functions take the session and the current time (`now`), so pages and tests agree on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.aggregates import substance_name

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
OPEN_SIGNAL_HOURS = 72  # a signal counts as open this long (the alerts' default lifetime)
RECENT_ALERT_HOURS = 72
STALE_SITE_HOURS = 48  # a site silent this long is flagged stale
WAIT_RED_MINUTES = 30  # a draft waiting longer is shown red
CONCORDANCE_HOURS = 72  # a spike and a contamination signal this close in one county agree
LINE_LIST_LIMIT = 500

Bucket = Literal["day", "week"]
Colour = Literal["red", "yellow", "blue", "grey"]
Source = Literal["reports", "results"]


def within(prefix: str | None, column: Any) -> Any:
    """Rows of region `prefix` or below (None or "": every region)."""
    if not prefix:
        return True
    prefix = prefix.strip("/")
    return or_(column == prefix, column.like(prefix.replace("%", r"\%") + "/%"))


def in_region(prefix: str | None, model: Any) -> Any:
    """`within` for a table with state and county columns: a state or a county is an
    equality test on its own (indexed) column."""
    parts = (prefix or "").strip("/").split("/")
    if len(parts) == 2 and all(parts):
        return model.state_id == "/".join(parts)
    if len(parts) == 3 and all(parts):
        return model.county_id == "/".join(parts)
    return within(prefix, model.region_id)


def not_canary(model: Any) -> Any:
    return model.canary.is_(false())


def region_label(region_id: str) -> str:
    last = region_id.split("/")[-1]
    return last.upper() if len(region_id.split("/")) == 2 else last.replace("-", " ").title()


def bucket_of(day: date, bucket: Bucket) -> date:
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def day_range(start: date, end: date, tz: Any) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in `tz`."""
    return (datetime.combine(start, datetime.min.time(), tzinfo=tz),
            datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz))



@dataclass(frozen=True)
class SignalRow:
    event_id: uuid.UUID
    kind: str
    pattern: str
    severity: str
    region_id: str
    region_name: str
    occurred_at: datetime
    published_at: datetime
    substance_id: str | None
    substance_name: str | None
    sold_as_name: str | None
    site_count: int | None
    sample_count: int | None
    identified_by: list[str]
    window_start: datetime | None
    window_end: datetime | None
    observed: float | None
    expected: float | None
    upperbound: float | None
    method: str | None
    score: float | None
    evidence_event_ids: list[str]


def signal_row(s: models.Signal) -> SignalRow:
    return SignalRow(
        event_id=s.event_id, kind=s.kind, pattern=s.pattern, severity=s.severity,
        region_id=s.region_id, region_name=s.region_name, occurred_at=s.occurred_at,
        published_at=s.published_at, substance_id=s.substance_id,
        substance_name=s.substance_name, sold_as_name=s.sold_as_name, site_count=s.site_count,
        sample_count=s.sample_count, identified_by=list(s.identified_by or []),
        window_start=s.window_start, window_end=s.window_end, observed=s.observed,
        expected=s.expected, upperbound=s.upperbound, method=s.method, score=s.score,
        evidence_event_ids=list(s.evidence_event_ids or []))


@dataclass(frozen=True)
class AlertRow:
    alert_id: uuid.UUID
    status: str
    kind: str
    severity: str
    region_id: str
    region_name: str
    substance_id: str | None
    created_at: datetime
    approved_by: str | None
    audience: int | None
    deliveries: dict[str, int]
    text_en: str


def alert_row(a: models.Alert) -> AlertRow:
    texts = a.texts or {}
    return AlertRow(alert_id=a.alert_id, status=a.status, kind=a.kind, severity=a.severity,
                    region_id=a.region_id, region_name=a.region_name,
                    substance_id=a.substance_id, created_at=a.created_at,
                    approved_by=a.approved_by, audience=a.audience,
                    deliveries=dict(a.deliveries or {}),
                    text_en=texts.get("en") or next(iter(texts.values()), ""))


@dataclass(frozen=True)
class WaitingDraft:
    alert_id: uuid.UUID
    severity: str
    region_id: str
    region_name: str
    substance_id: str | None
    kind: str
    created_at: datetime
    waited: timedelta
    overdue: bool  # waited past WAIT_RED_MINUTES
    review_reason: str | None
    audience: int | None
    text_en: str


@dataclass(frozen=True)
class SubstanceFound:
    substance_id: str | None
    name: str
    raw: str
    method: str
    confidence: float | None
    percent: float | None
    substance_class: str | None
    risk: int | None
    status: str


@dataclass(frozen=True)
class SampleRow:
    event_id: uuid.UUID
    result_id: uuid.UUID
    site_id: uuid.UUID
    site_name: str | None
    sample_id: str
    collected_at: datetime
    region_id: str
    region_name: str
    sold_as: str | None
    sold_as_id: str | None
    form: str | None
    methods: list[str]
    substances: list[SubstanceFound]
    strips: dict[str, str]
    adverse_reaction: bool | None
    sold_as_matched: bool | None  # the sold-as was among what was found (None: not known)


def sample_row(r: models.Result, sites: dict[uuid.UUID, str]) -> SampleRow:
    found = [SubstanceFound(
        substance_id=s.get("substance_id"), raw=str(s.get("raw", "")),
        name=substance_name(s.get("substance_id")) if s.get("substance_id")
        else str(s.get("raw", "")),
        method=str(s.get("method") or "ftir"), confidence=s.get("confidence"),
        percent=s.get("percent"), substance_class=s.get("substance_class"),
        risk=s.get("risk"), status=str(s.get("status", ""))) for s in r.substances or []]
    matched = None if r.sold_as_id is None else \
        any(f.substance_id == r.sold_as_id for f in found)
    return SampleRow(
        event_id=r.event_id, result_id=r.result_id, site_id=r.site_id,
        site_name=sites.get(r.site_id), sample_id=r.sample_id, collected_at=r.collected_at,
        region_id=r.region_id, region_name=r.region_name, sold_as=r.sold_as_raw,
        sold_as_id=r.sold_as_id, form=r.form, methods=list(r.methods or []), substances=found,
        strips=dict(r.strips or {}), adverse_reaction=r.adverse_reaction,
        sold_as_matched=matched)


@dataclass(frozen=True)
class ReportRow:
    event_id: uuid.UUID
    report_id: uuid.UUID
    source: str
    occurred_at: datetime
    region_id: str
    region_name: str
    fatal: str
    naloxone_doses: int | None
    suspected: list[str]


def report_row(r: models.Report) -> ReportRow:
    return ReportRow(event_id=r.event_id, report_id=r.report_id, source=r.source,
                     occurred_at=r.occurred_at, region_id=r.region_id,
                     region_name=r.region_name, fatal=r.fatal,
                     naloxone_doses=r.naloxone_doses,
                     suspected=[substance_name(s) for s in r.suspected_substance_ids or []])


def site_names(session: Session) -> dict[uuid.UUID, str]:
    return {s.site_id: s.name for s in session.scalars(select(models.Site))}
