"""The Now page: regions with open signals, drafts waiting, recent alerts, sites' last
submissions, the last smoke round trip; and the review queue."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.repository.common import (
    OPEN_SIGNAL_HOURS,
    RECENT_ALERT_HOURS,
    SEVERITY_RANK,
    STALE_SITE_HOURS,
    WAIT_RED_MINUTES,
    AlertRow,
    WaitingDraft,
    alert_row,
    not_canary,
    site_names,
    within,
)


@dataclass(frozen=True)
class RegionSignals:
    region_id: str
    region_name: str
    signals: int
    worst_severity: str
    latest_at: datetime
    patterns: list[str]


@dataclass(frozen=True)
class SiteActivity:
    site_id: uuid.UUID
    name: str
    last_submission_at: datetime
    stale: bool


@dataclass(frozen=True)
class SmokeRoundTrip:
    submitted_at: datetime
    signal_at: datetime | None
    alert_at: datetime | None
    first_sms_at: datetime | None
    seconds: float | None  # submitted -> first SMS handed over; None: not (yet) sent


@dataclass(frozen=True)
class NowPage:
    regions: list[RegionSignals]
    waiting: list[WaitingDraft]
    recent_alerts: list[AlertRow]
    sites: list[SiteActivity]
    smoke: SmokeRoundTrip | None


def open_signals(session: Session, now: datetime,
                 prefix: str | None = None) -> list[models.Signal]:
    since = now - timedelta(hours=OPEN_SIGNAL_HOURS)
    return list(session.scalars(
        select(models.Signal).where(not_canary(models.Signal), models.Signal.published_at >= since,
                                    within(prefix, models.Signal.region_id))
        .order_by(models.Signal.published_at.desc())))


def regions_with_open_signals(session: Session, now: datetime) -> list[RegionSignals]:
    by_region: dict[str, list[models.Signal]] = defaultdict(list)
    for s in open_signals(session, now):
        by_region[s.region_id].append(s)
    out = [RegionSignals(
        region_id=rid, region_name=rows[0].region_name, signals=len(rows),
        worst_severity=max((r.severity for r in rows), key=lambda v: SEVERITY_RANK.get(v, 0)),
        latest_at=max(r.published_at for r in rows),
        patterns=sorted({r.pattern for r in rows})) for rid, rows in by_region.items()]
    return sorted(out, key=lambda r: (-SEVERITY_RANK.get(r.worst_severity, 0),
                                      -r.latest_at.timestamp()))


def review_queue(session: Session, now: datetime,
                 wait_red_minutes: float = WAIT_RED_MINUTES) -> list[WaitingDraft]:
    """Drafts waiting for review, the most severe first, then the longest waiting."""
    drafts = session.scalars(select(models.Alert).where(models.Alert.status == "draft",
                                                        not_canary(models.Alert)))
    out = []
    for a in drafts:
        waited = now - a.created_at
        texts = a.texts or {}
        out.append(WaitingDraft(
            alert_id=a.alert_id, severity=a.severity, region_id=a.region_id,
            region_name=a.region_name, substance_id=a.substance_id, kind=a.kind,
            created_at=a.created_at, waited=waited,
            overdue=waited > timedelta(minutes=wait_red_minutes),
            review_reason=a.review_reason, audience=a.audience,
            text_en=texts.get("en") or next(iter(texts.values()), "")))
    return sorted(out, key=lambda d: (-SEVERITY_RANK.get(d.severity, 0), d.created_at))


def recent_alerts(session: Session, now: datetime,
                  hours: float = RECENT_ALERT_HOURS) -> list[AlertRow]:
    rows = session.scalars(select(models.Alert).where(
        not_canary(models.Alert), models.Alert.created_at >= now - timedelta(hours=hours))
        .order_by(models.Alert.created_at.desc()))
    return [alert_row(a) for a in rows]


def site_activity(session: Session, now: datetime,
                  stale_hours: float = STALE_SITE_HOURS) -> list[SiteActivity]:
    """Each known site's last submission (a result or a report, by when it was published);
    sites silent for `stale_hours` are stale."""
    last: dict[uuid.UUID, datetime] = {}
    for model in (models.Result, models.Report):
        query = select(model.site_id, func.max(model.published_at)).group_by(model.site_id)
        if model is models.Result:
            query = query.where(not_canary(models.Result))
        for site_id, at in session.execute(query):
            if site_id is not None and (site_id not in last or at > last[site_id]):
                last[site_id] = at
    names = site_names(session)
    out = [SiteActivity(site_id=sid, name=names.get(sid, str(sid)[:8]), last_submission_at=at,
                        stale=now - at > timedelta(hours=stale_hours))
           for sid, at in last.items()]
    return sorted(out, key=lambda s: s.last_submission_at)


def last_smoke(session: Session) -> SmokeRoundTrip | None:
    """The last canary result and how far it got: signal, alert, first SMS."""
    result = session.scalar(select(models.Result).where(models.Result.canary.is_(True))
                            .order_by(models.Result.published_at.desc()).limit(1))
    if result is None:
        return None
    signal = next((s for s in session.scalars(
        select(models.Signal).where(models.Signal.canary.is_(True),
                                    models.Signal.published_at >= result.published_at)
        .order_by(models.Signal.published_at))
        if str(result.event_id) in (s.evidence_event_ids or [])), None)
    alert = None
    if signal is not None:
        alert = next((a for a in session.scalars(
            select(models.Alert).where(models.Alert.canary.is_(True),
                                       models.Alert.created_at >= result.published_at
                                       - timedelta(minutes=1)))
            if str(signal.event_id) in (a.signal_event_ids or [])), None)
    first_sms = alert.first_sms_at if alert is not None else None
    return SmokeRoundTrip(
        submitted_at=result.published_at, signal_at=signal.published_at if signal else None,
        alert_at=alert.created_at if alert else None, first_sms_at=first_sms,
        seconds=(first_sms - result.published_at).total_seconds() if first_sms else None)


def now_page(session: Session, now: datetime) -> NowPage:
    return NowPage(regions=regions_with_open_signals(session, now),
                   waiting=review_queue(session, now), recent_alerts=recent_alerts(session, now),
                   sites=site_activity(session, now), smoke=last_smoke(session))
