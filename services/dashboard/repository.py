"""What every dashboard page reads, from the dashboard's own tables only
(`services.dashboard.models`); each function returns plain dataclasses.

Canary (smoke) traffic never counts in figures: every query here leaves `canary` rows out,
except `now`'s last smoke round trip, which reads only them.
Functions take the session and the current time (`now`), so pages and tests agree on it.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

from scipy.stats import poisson
from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.consumer import HANDED
from shared.substances import HIGH_RISK, get_substance

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


def _within(prefix: str | None, column: Any) -> Any:
    """Rows of region `prefix` or below (None or "": every region)."""
    if not prefix:
        return True
    prefix = prefix.strip("/")
    return or_(column == prefix, column.like(prefix.replace("%", r"\%") + "/%"))


def _not_canary(model: Any) -> Any:
    return model.canary.is_(false())


def substance_name(substance_id: str | None) -> str:
    if substance_id is None:
        return "unknown"
    try:
        return get_substance(substance_id).name
    except KeyError:
        return substance_id


# ---- shared rows ------------------------------------------------------------------------------

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


def _signal_row(s: models.Signal) -> SignalRow:
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


def _alert_row(a: models.Alert) -> AlertRow:
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


def _sample_row(r: models.Result, sites: dict[uuid.UUID, str]) -> SampleRow:
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


def _report_row(r: models.Report) -> ReportRow:
    return ReportRow(event_id=r.event_id, report_id=r.report_id, source=r.source,
                     occurred_at=r.occurred_at, region_id=r.region_id,
                     region_name=r.region_name, fatal=r.fatal,
                     naloxone_doses=r.naloxone_doses,
                     suspected=[substance_name(s) for s in r.suspected_substance_ids or []])


def _sites(session: Session) -> dict[uuid.UUID, str]:
    return {s.site_id: s.name for s in session.scalars(select(models.Site))}


# ---- Now --------------------------------------------------------------------------------------

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
        select(models.Signal).where(_not_canary(models.Signal), models.Signal.published_at >= since,
                                    _within(prefix, models.Signal.region_id))
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
                                                        _not_canary(models.Alert)))
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
        _not_canary(models.Alert), models.Alert.created_at >= now - timedelta(hours=hours))
        .order_by(models.Alert.created_at.desc()))
    return [_alert_row(a) for a in rows]


def site_activity(session: Session, now: datetime,
                  stale_hours: float = STALE_SITE_HOURS) -> list[SiteActivity]:
    """Each known site's last submission (a result or a report, by when it was published);
    sites silent for `stale_hours` are stale."""
    last: dict[uuid.UUID, datetime] = {}
    for model in (models.Result, models.Report):
        query = select(model.site_id, func.max(model.published_at)).group_by(model.site_id)
        if model is models.Result:
            query = query.where(_not_canary(models.Result))
        for site_id, at in session.execute(query):
            if site_id is not None and (site_id not in last or at > last[site_id]):
                last[site_id] = at
    names = _sites(session)
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


# ---- the alert workbench ----------------------------------------------------------------------

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
                _not_canary(models.Signal), models.Signal.kind == other,
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
    sites = _sites(session)
    samples = [_sample_row(r, sites) for r in session.scalars(
        select(models.Result).where(models.Result.event_id.in_(evidence))
        .order_by(models.Result.collected_at))] if evidence else []
    reports = [_report_row(r) for r in session.scalars(
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
    rows = [_signal_row(s) for s in signals]
    return Workbench(
        alert_id=a.alert_id, status=a.status, kind=a.kind, severity=a.severity,
        region_id=a.region_id, region_name=a.region_name, substance_id=a.substance_id,
        texts=dict(a.texts or {}), segments=dict(a.segments or {}),
        review_reason=a.review_reason, created_at=a.created_at, approved_at=a.approved_at,
        approved_by=a.approved_by, expires_at=a.expires_at, parent_id=a.parent_id,
        canary=a.canary, signals=rows, spikes=[r for r in rows if r.kind == "spike"],
        samples=samples, reports=reports,
        concordance=bool(concordant),
        concordant_signals=[_signal_row(s) for s in concordant], audit=audit,
        funnel=funnel_of(a.audience, dict(a.deliveries or {})), timeline=timeline)


# ---- trends -----------------------------------------------------------------------------------

@dataclass
class RegionNode:
    region_id: str
    name: str
    level: Literal["state", "county", "postal_code"]
    count: int
    children: list[RegionNode] = field(default_factory=list)


def region_tree(session: Session) -> list[RegionNode]:
    """State -> county -> postal code, for every region with reports or results."""
    names: dict[str, str] = {}
    counts: Counter[str] = Counter()
    for model in (models.Report, models.Result):
        query = select(model.region_id, model.region_name, func.count()) \
            .group_by(model.region_id, model.region_name)
        if model is models.Result:
            query = query.where(_not_canary(models.Result))
        for rid, name, n in session.execute(query):
            names[rid] = name
            counts[rid] += n
    states: dict[str, RegionNode] = {}
    counties: dict[str, RegionNode] = {}
    for rid in sorted(counts):
        parts = rid.split("/")
        state_id, county_id = "/".join(parts[:2]), "/".join(parts[:3])
        state = states.setdefault(state_id, RegionNode(state_id, _label(state_id), "state", 0))
        state.count += counts[rid]
        if county_id == state_id:
            continue
        county = counties.get(county_id)
        if county is None:
            county = counties[county_id] = RegionNode(county_id, _label(county_id), "county", 0)
            state.children.append(county)
        county.count += counts[rid]
        if rid != county_id:
            county.children.append(RegionNode(rid, names[rid], "postal_code", counts[rid]))
    return list(states.values())


def _label(region_id: str) -> str:
    last = region_id.split("/")[-1]
    return last.upper() if len(region_id.split("/")) == 2 else last.replace("-", " ").title()


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


def _bucket_of(day: date, bucket: Bucket) -> date:
    return day - timedelta(days=day.weekday()) if bucket == "week" else day


def _colour(p: float | None) -> Colour:
    if p is None:
        return "grey"
    return "red" if p < 0.01 else "yellow" if p < 0.05 else "blue"


def _p_value(count: int, expected: float) -> float:
    """P(X >= count) for a Poisson count of mean `expected` (floored: a zero baseline)."""
    return float(poisson.sf(count - 1, max(expected, 0.1)))


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
    first = _bucket_of(start, bucket) - step * (baseline + gap)
    first_dt = datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)
    end_dt = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=now.tzinfo)
    counts: Counter[date] = Counter()
    earliest: datetime | None
    if source == "reports":
        q = select(models.Report.occurred_at).where(
            _within(region_id, models.Report.region_id),
            models.Report.occurred_at >= first_dt, models.Report.occurred_at < end_dt)
        eq = select(func.min(models.Report.occurred_at)).where(
            _within(region_id, models.Report.region_id))
        if report_source:
            q = q.where(models.Report.source == report_source)
        if fatal is not None:
            q = q.where(models.Report.fatal == ("yes" if fatal else "no"))
    else:
        q = select(models.Result.collected_at).where(
            _not_canary(models.Result), _within(region_id, models.Result.region_id),
            models.Result.collected_at >= first_dt, models.Result.collected_at < end_dt)
        eq = select(func.min(models.Result.collected_at)).where(
            _not_canary(models.Result), _within(region_id, models.Result.region_id))
    for (at,) in session.execute(q):
        counts[_bucket_of(at.date(), bucket)] += 1
    earliest = session.scalar(eq)
    spikes = [] if source != "reports" else list(session.scalars(
        select(models.Signal).where(_not_canary(models.Signal), models.Signal.kind == "spike",
                                    _within(region_id, models.Signal.region_id),
                                    models.Signal.window_end >= first_dt,
                                    models.Signal.window_start < end_dt)
        .order_by(models.Signal.published_at)))
    points = []
    day = _bucket_of(start, bucket)
    while day <= end:
        count = counts.get(day, 0)
        detector = next((s for s in reversed(spikes) if s.region_id == (region_id or s.region_id)
                         and s.window_start is not None and s.window_end is not None
                         and _bucket_of(s.window_start.date(), bucket) == day), None)
        history_from = day - step * (baseline + gap)
        expected: float | None
        upper: float | None
        p: float | None
        if detector is not None and detector.expected is not None:
            expected, upper = detector.expected, detector.upperbound
            p = _p_value(count, expected)
        elif earliest is None or earliest.date() > history_from:
            expected = upper = p = None
        else:
            window = [counts.get(day - step * (gap + i), 0) for i in range(1, baseline + 1)]
            expected = statistics.fmean(window)
            sd = statistics.pstdev(window)
            upper = expected + 3 * max(sd, math.sqrt(max(expected, 0.1)))
            p = _p_value(count, expected)
        points.append(TrendPoint(start=day, count=count, expected=expected, upperbound=upper,
                                 p_value=p, colour=_colour(p),
                                 from_detector=detector is not None))
        day += step
    return Trend(region_id=region_id, source=source, bucket=bucket, start=start, end=end,
                 points=points, signals=[_signal_row(s) for s in spikes])


# ---- drug supply ------------------------------------------------------------------------------

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


def _high_risk_ids(rows: Iterable[SampleRow]) -> set[str]:
    return {s.substance_id for r in rows for s in r.substances
            if s.substance_id and (s.risk or 0) >= HIGH_RISK}


def drug_supply(session: Session, now: datetime, region_id: str | None = None,
                days: int = 90, start: date | None = None, end: date | None = None,
                bucket: Bucket = "week", line_limit: int = LINE_LIST_LIMIT) -> DrugSupply:
    """The figures come from three columns of every sample of the range (plain rows, no ORM
    objects: a year of a busy region is thousands of samples); full rows only for the line
    list's latest `line_limit`."""
    end = end or now.date()
    start = start or end - timedelta(days=days - 1)
    where = (_not_canary(models.Result), _within(region_id, models.Result.region_id),
             models.Result.collected_at >= datetime.combine(start, datetime.min.time(),
                                                            tzinfo=now.tzinfo),
             models.Result.collected_at < datetime.combine(end + timedelta(days=1),
                                                           datetime.min.time(),
                                                           tzinfo=now.tzinfo))
    names: dict[str, str] = {}

    def name_of(found: dict[str, Any]) -> str:
        sid = found.get("substance_id")
        if not sid:
            return str(found.get("raw", ""))
        if sid not in names:
            names[sid] = substance_name(sid)
        return names[sid]

    samples = 0
    per_sold_as: dict[str | None, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, matched, hr
    found_in: dict[str | None, Counter[str]] = defaultdict(Counter)
    tested: Counter[date] = Counter()
    positive: Counter[tuple[date, str]] = Counter()
    for at, sold_as_id, substances in session.execute(
            select(models.Result.collected_at, models.Result.sold_as_id,
                   models.Result.substances).where(*where)):
        samples += 1
        subs = substances or []
        ids = {f.get("substance_id") for f in subs}
        high = {f["substance_id"] for f in subs
                if f.get("substance_id") and (f.get("risk") or 0) >= HIGH_RISK}
        counts = per_sold_as[sold_as_id]
        counts[0] += 1
        counts[1] += sold_as_id is not None and sold_as_id in ids
        counts[2] += bool(high)
        found_in[sold_as_id].update({name_of(f) for f in subs})
        b = _bucket_of(at.date(), bucket)
        tested[b] += 1
        for sid in high:
            positive[b, sid] += 1
    by_sold_as = [SoldAsRow(
        sold_as_id=sold_as_id,
        sold_as=substance_name(sold_as_id) if sold_as_id else "unknown / not given",
        samples=n, matched=matched, match_rate=matched / n if sold_as_id else None,
        found=found_in[sold_as_id].most_common(), high_risk_samples=high_risk)
        for sold_as_id, (n, matched, high_risk) in per_sold_as.items()]
    by_sold_as.sort(key=lambda r: -r.samples)
    positivity = [PositivityPoint(start=b, substance_id=sid, substance=substance_name(sid),
                                  positive=n, tested=tested[b], rate=n / tested[b])
                  for (b, sid), n in sorted(positive.items())]
    sites = _sites(session)
    line_list = [_sample_row(r, sites) for r in session.scalars(
        select(models.Result).where(*where).order_by(models.Result.collected_at.desc())
        .limit(line_limit))]
    return DrugSupply(start=start, end=end, samples=samples, by_sold_as=by_sold_as,
                      positivity=positivity, line_list=line_list)


# ---- map --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MapArea:
    region_id: str  # a county (state/county) or a postal code
    name: str
    level: Literal["county", "postal_code"]
    reports: int
    results: int
    open_signals: int
    worst_severity: str | None


def map_data(session: Session, now: datetime, days: int = 28,
             level: Literal["county", "postal_code"] = "county") -> list[MapArea]:
    """Recent counts and open signals per county (or per postal code, for ZIP centroids)."""
    since = now - timedelta(days=days)
    col = "county_id" if level == "county" else "region_id"
    reports: Counter[str] = Counter()
    results: Counter[str] = Counter()
    names: dict[str, str] = {}
    for model, counter, when in ((models.Report, reports, models.Report.occurred_at),
                                 (models.Result, results, models.Result.collected_at)):
        key = getattr(model, col)
        query = select(key, func.min(model.region_name), func.count()) \
            .where(when >= since).group_by(key)
        if model is models.Result:
            query = query.where(_not_canary(models.Result))
        for rid, name, n in session.execute(query):
            counter[rid] += n
            names.setdefault(rid, name if level == "postal_code" else _label(rid))
    signals: dict[str, list[str]] = defaultdict(list)
    for s in open_signals(session, now):
        rid = s.county_id if level == "county" else s.region_id
        signals[rid].append(s.severity)
        names.setdefault(rid, s.region_name if level == "postal_code" else _label(rid))
    out = [MapArea(region_id=rid, name=names[rid], level=level, reports=reports[rid],
                   results=results[rid], open_signals=len(signals[rid]),
                   worst_severity=max(signals[rid], key=lambda v: SEVERITY_RANK.get(v, 0))
                   if signals[rid] else None)
           for rid in sorted(set(reports) | set(results) | set(signals))]
    return out


# ---- referrals --------------------------------------------------------------------------------

FUNNEL_STEPS = ("requested", "options_sent", "chosen", "provider_notified", "connected")
OUTCOMES = ("declined", "no_response", "stopped")


@dataclass(frozen=True)
class ReferralFunnel:
    total: int
    steps: list[tuple[str, int]]  # each status of the path and how many referrals reached it
    outcomes: list[tuple[str, int]]  # referrals whose current status is each ending
    median_to_connected: timedelta | None
    by_status: dict[str, int]


def referrals_funnel(session: Session, now: datetime, days: int = 90,
                     region_id: str | None = None) -> ReferralFunnel:
    since = now - timedelta(days=days)
    rows = list(session.scalars(select(models.Referral).where(
        or_(models.Referral.requested_at >= since, models.Referral.updated_at >= since),
        _within(region_id, models.Referral.region_id))))
    reached: Counter[str] = Counter()
    for r in rows:
        reached.update(set(r.reached or []))
    waits = [(r.connected_at - r.requested_at).total_seconds() for r in rows
             if r.connected_at and r.requested_at]
    return ReferralFunnel(
        total=len(rows), steps=[(s, reached[s]) for s in FUNNEL_STEPS],
        outcomes=[(s, sum(1 for r in rows if r.status == s)) for s in OUTCOMES],
        median_to_connected=timedelta(seconds=statistics.median(waits)) if waits else None,
        by_status=dict(Counter(r.status for r in rows)))


# ---- performance of the system ----------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    name: str
    count: int
    p50: timedelta | None
    p90: timedelta | None


@dataclass(frozen=True)
class RejectRate:
    pattern: str
    decided: int
    rejected: int
    rate: float


@dataclass(frozen=True)
class Performance:
    latencies: list[Latency]  # evidence->signal, signal->decision, decision->first SMS, ...
    review_latency: Latency  # draft -> an official's decision (policy approvals left out)
    reject_rates: list[RejectRate]
    alerts_per_region_month: list[tuple[str, str, int]]  # region, "YYYY-MM", alerts


def _latency(name: str, seconds: list[float]) -> Latency:
    if not seconds:
        return Latency(name, 0, None, None)
    ordered = sorted(seconds)

    def q(p: float) -> timedelta:
        return timedelta(seconds=ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)])

    return Latency(name, len(ordered), q(0.5), q(0.9))


def performance(session: Session, now: datetime, days: int = 90) -> Performance:
    since = now - timedelta(days=days)
    alerts = list(session.scalars(select(models.Alert).where(
        _not_canary(models.Alert), models.Alert.created_at >= since, models.Alert.kind == "alert")))
    signal_ids = {uuid.UUID(x) for a in alerts for x in a.signal_event_ids or []}
    signals = {s.event_id: s for s in session.scalars(
        select(models.Signal).where(models.Signal.event_id.in_(signal_ids)))} \
        if signal_ids else {}
    evidence_ids = {uuid.UUID(e) for s in signals.values() for e in s.evidence_event_ids or []}
    evidence_at: dict[str, datetime] = {}
    for model in (models.Result, models.Report):
        if evidence_ids:
            for eid, at in session.execute(select(model.event_id, model.published_at)
                                           .where(model.event_id.in_(evidence_ids))):
                evidence_at[str(eid)] = at
    to_signal, to_decision, to_sms, end_to_end, review = [], [], [], [], []
    decided: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    monthly: Counter[tuple[str, str]] = Counter()
    for a in alerts:
        monthly[a.county_id, a.created_at.strftime("%Y-%m")] += 1
        mine = [signals[uuid.UUID(x)] for x in a.signal_event_ids or []
                if uuid.UUID(x) in signals]
        first_signal = min((s.published_at for s in mine), default=None)
        first_evidence = min((evidence_at[e] for s in mine for e in s.evidence_event_ids or []
                              if e in evidence_at), default=None)
        if first_signal and first_evidence:
            to_signal.append((first_signal - first_evidence).total_seconds())
        if a.decided_at and first_signal:
            to_decision.append((a.decided_at - first_signal).total_seconds())
        if a.first_sms_at and a.decided_at:
            to_sms.append((a.first_sms_at - a.decided_at).total_seconds())
        if a.first_sms_at and first_evidence:
            end_to_end.append((a.first_sms_at - first_evidence).total_seconds())
        human = a.decided_by is not None and not a.decided_by.startswith("policy:")
        if a.decided_at and human:
            review.append((a.decided_at - a.created_at).total_seconds())
            pattern = mine[0].pattern if mine else "unknown"
            decided[pattern] += 1
            rejected[pattern] += a.decision == "reject"
    return Performance(
        latencies=[_latency("evidence to signal", to_signal),
                   _latency("signal to decision", to_decision),
                   _latency("decision to first SMS", to_sms),
                   _latency("evidence to first SMS", end_to_end)],
        review_latency=_latency("review", review),
        reject_rates=[RejectRate(p, n, rejected[p], rejected[p] / n)
                      for p, n in sorted(decided.items())],
        alerts_per_region_month=sorted((r, m, n) for (r, m), n in monthly.items()))
