"""Alert lifecycle: signal -> alert (new, or merged into an open one) -> review or policy
approval -> one delivery per subscriber (fan-out) -> sent / expired.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import delete, exists, insert, select, true, update
from sqlalchemy.orm import Session, object_session

from services.alerts.changes import alert_changed
from services.alerts.models import (
    Alert,
    AlertAudit,
    AlertSource,
    Delivery,
    EarlyStatus,
    Subscriber,
    Subscription,
)
from services.alerts.templates import LANGUAGES, alert_texts, all_clear_texts, update_texts
from shared.db import utcnow
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.gsm import is_gsm7, segment_count, sms_text_problem, strip_invisible
from shared.ids import uuid7
from shared.problems import ProblemError
from shared.region_prefix import longest_prefix
from shared.regions import Region
from shared.settings import Settings

log = logging.getLogger(__name__)
PAGE_SIZE = 1000
MAX_SEGMENTS = 2  # 306 GSM-7 characters
OPEN = ("draft", "approved", "sending")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
SYSTEM = "system"


# Methods that confirm what a field test (FTIR, Raman, strips) found: a laboratory's
# chromatography with mass spectrometry (ingest's `Method` names).
CONFIRMATORY_METHODS = frozenset({"gc_ms", "lc_ms"})


@dataclass(frozen=True)
class RegionPolicy:
    """Which new alerts of a region are approved without review.

    severities: the severities approved by policy;
    lab_confirmed: a contamination alert also needs its substance identified by a
      confirmatory method (`CONFIRMATORY_METHODS`); overdose spikes name no substance, so
      severity alone decides for them;
    as_sold_novel: a `novel_substance` signal for exactly what the sample was sold as
      (cocaine in a sample sold as cocaine) may be approved too; by default it goes to review;
    second_reviewer: a critical alert reviewed by officials needs the approvals of two
      different reviewers, the second not the author of the last edit of its text.
    """

    severities: frozenset[str]
    lab_confirmed: bool = False
    as_sold_novel: bool = False
    second_reviewer: bool = False


def _region_policy(value: Any) -> RegionPolicy:
    if isinstance(value, dict):
        unknown = set(value) - {"severities", "lab_confirmed", "as_sold_novel",
                                "second_reviewer"}
        if unknown:
            raise ValueError(f"LOOKOUT_ALERT_POLICY_JSON: unknown option(s) {sorted(unknown)}")
        policy = RegionPolicy(frozenset(value.get("severities", ())),
                              bool(value.get("lab_confirmed", False)),
                              bool(value.get("as_sold_novel", False)),
                              bool(value.get("second_reviewer", False)))
    else:
        policy = RegionPolicy(frozenset(value))
    if not policy.severities <= set(SEVERITY_RANK):
        raise ValueError(f"LOOKOUT_ALERT_POLICY_JSON: unknown severities "
                         f"{sorted(policy.severities - set(SEVERITY_RANK))}")
    return policy


@cache
def _policy(raw: str) -> dict[str, RegionPolicy]:
    return {str(k).strip("/"): _region_policy(v)
            for k, v in json.loads(raw).items()} if raw else {}


def policy_for(settings: Settings, region_id: str) -> RegionPolicy:
    """The longest region prefix in LOOKOUT_ALERT_POLICY_JSON (the key "" matches every
    region), else LOOKOUT_AUTO_APPROVE_SEVERITIES."""
    policy = _policy(settings.alert_policy_json)
    best = longest_prefix(policy, region_id)
    if best is None:
        return RegionPolicy(frozenset(settings.auto_approve_severities))
    return policy[best]


def check_policy(settings: Settings) -> None:
    """Raise ValueError on a malformed LOOKOUT_ALERT_POLICY_JSON (the worker checks at
    start, so a typo never sends a signal to the dead-letter topic)."""
    _policy(settings.alert_policy_json)


def lab_confirmed(signal: ContaminationSignalV1 | SpikeSignalV1) -> bool:
    return isinstance(signal, ContaminationSignalV1) and \
        bool(CONFIRMATORY_METHODS.intersection(signal.identified_by))


def as_sold_novel(signal: ContaminationSignalV1 | SpikeSignalV1) -> bool:
    """A substance new to the region that is exactly what the sample was sold as: worth a
    look by the team, not a text to everyone."""
    return isinstance(signal, ContaminationSignalV1) and signal.pattern == "novel_substance" \
        and signal.sold_as_id is not None and signal.sold_as_id == signal.substance_id


def text_block(texts: dict[str, str]) -> str | None:
    """Why these texts may not go out without review (not GSM-7, over MAX_SEGMENTS), or
    None. Every approval by policy checks it; an official may `force` past it."""
    for lang, text in sorted(texts.items()):
        problem = sms_text_problem(strip_invisible(text), MAX_SEGMENTS)
        if problem:
            return f"text {problem} ({lang})"
    return None


def approval_block(settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1,
                   severity: str | None = None) -> str | None:
    """Why the policy leaves this signal's alert (at `severity`, default the signal's) for
    review, or None when it is approved by policy. In LOOKOUT_ENV=dev everything is approved
    except an as-sold novel substance and a text that is not short GSM-7."""
    policy = policy_for(settings, signal.region_id)
    blocked_text = text_block(alert_texts(
        signal.model_copy(update={"severity": severity}) if severity else signal))
    if blocked_text:
        return blocked_text
    if as_sold_novel(signal) and not policy.as_sold_novel:
        return "novel substance as sold"
    if settings.env == "dev":
        return None
    if (severity or signal.severity) not in policy.severities:
        return "severity"
    if policy.lab_confirmed and isinstance(signal, ContaminationSignalV1) and \
            not lab_confirmed(signal):
        return "not lab-confirmed"
    return None


def auto_approves(settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1,
                  severity: str | None = None) -> bool:
    return approval_block(settings, signal, severity) is None


def segments_of(texts: dict[str, str]) -> dict[str, int]:
    return {lang: segment_count(text) for lang, text in texts.items()}


def snapshot(alert: Alert) -> dict[str, Any]:
    return {"status": alert.status, "severity": alert.severity, "texts": dict(alert.texts or {}),
            "segments": alert.segments, "kind": alert.kind, "approved_by": alert.approved_by,
            "expires_at": alert.expires_at.isoformat() if alert.expires_at else None,
            "signal_count": alert.signal_count}


def audit(session: Session, alert: Alert, actor: str, action: str,
          before: dict[str, Any] | None, review_reason: str | None = None, *,
          reason: str | None = None) -> None:
    """Record the change in `alerts_audit` and announce it on `alerts.events.v1`
    (`review_reason`: why it waits for review; `reason`: the official's, kept in the
    audit's `after`)."""
    session.flush()
    after = snapshot(alert)
    if reason:
        after["reason"] = reason[:1000]
    session.add(AlertAudit(alert_id=alert.id, actor=actor, action=action, at=utcnow(),
                           before=before, after=after))
    alert_changed(session, alert, action, actor, review_reason)


def _set_texts(alert: Alert, texts: dict[str, str]) -> None:
    texts = {lang: strip_invisible(text) for lang, text in texts.items()}
    alert.texts = texts
    alert.body_en = texts.get("en") or next(iter(texts.values()))
    alert.segments = max(segments_of(texts).values())


def _approve(alert: Alert, actor: str) -> None:
    alert.status = "approved"
    alert.approved_at = utcnow()
    alert.approved_by = actor


def alert_from_signal(
    session: Session, settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1
) -> Alert:
    """The alert for this signal: the same signal again returns the same alert; a signal of
    the same region and substance within the merge window joins the open alert (a higher
    severity escalates it); otherwise a new alert, approved by policy or left as a draft."""
    existing = session.scalar(
        select(Alert).join(AlertSource, AlertSource.alert_id == Alert.id)
        .where(AlertSource.signal_event_id == signal.event_id)
    )
    if existing is not None:
        return existing
    now = utcnow()
    substance_id = getattr(signal, "substance_id", None)
    if signal.canary:
        return _canary_alert(session, settings, signal, substance_id)
    open_alert = session.scalar(
        select(Alert).where(
            Alert.region_id == signal.region_id,
            Alert.substance_id.is_(None) if substance_id is None
            else Alert.substance_id == substance_id,
            Alert.status.in_(OPEN), Alert.kind == "alert",
            Alert.created_at >= now - timedelta(hours=settings.alert_merge_window_hours))
        .order_by(Alert.created_at.desc()).limit(1)
    )
    if open_alert is not None:
        before = snapshot(open_alert)
        open_alert.signal_count += 1
        open_alert.updated_at = now
        action = "merge"
        if SEVERITY_RANK[signal.severity] > SEVERITY_RANK.get(open_alert.severity, 0):
            action = "escalate"
            open_alert.severity = signal.severity
            if open_alert.status in ("draft", "approved"):
                _set_texts(open_alert, alert_texts(signal))
            if open_alert.status == "approved" and text_block(open_alert.texts):
                open_alert.status = "draft"  # its new text needs a reviewer's look
                open_alert.approved_at = open_alert.approved_by = None
        if open_alert.status == "draft" and auto_approves(settings, signal, open_alert.severity):
            # A signal that qualifies by itself (at the alert's severity; e.g. lab-confirmed,
            # or not an as-sold novel substance) approves the draft, with its own text.
            _set_texts(open_alert, alert_texts(
                signal.model_copy(update={"severity": open_alert.severity})))
            _approve(open_alert, "policy:auto")
            action = "merge_approve" if action == "merge" else action
        _add_sources(session, open_alert, signal)
        reason = approval_block(settings, signal, open_alert.severity) \
            if open_alert.status == "draft" else None
        audit(session, open_alert, SYSTEM, action, before, reason)
        return open_alert
    texts = alert_texts(signal)
    alert = Alert(
        region_id=signal.region_id, region_name=signal.region_name,
        substance_id=substance_id, severity=signal.severity, status="draft",
        created_at=now, expires_at=now + timedelta(hours=settings.alert_lifetime_hours),
        kind="alert", signal_count=1,
    )
    _set_texts(alert, texts)
    blocked = approval_block(settings, signal)
    if blocked is None:
        _approve(alert, "policy:auto")
    else:
        log.info("alert for signal %s left for review (%s)", signal.event_id, blocked)
    session.add(alert)
    session.flush()
    _add_sources(session, alert, signal)
    audit(session, alert, SYSTEM, "create", None, blocked)
    return alert


def _canary_alert(session: Session, settings: Settings,
                  signal: ContaminationSignalV1 | SpikeSignalV1,
                  substance_id: str | None) -> Alert:
    """A canary signal (`lookout smoke`) gets an alert of its own, marked TEST, approved by
    policy and sent only to test subscribers (see `fan_out_page`)."""
    now = utcnow()
    alert = Alert(
        region_id=signal.region_id, region_name=signal.region_name,
        substance_id=substance_id, severity=signal.severity, status="draft", created_at=now,
        expires_at=now + timedelta(hours=1), kind="canary", signal_count=1,
    )
    _set_texts(alert, {lang: f"[TEST] {text}" for lang, text in alert_texts(signal).items()})
    blocked = text_block(alert.texts)
    if blocked is None:
        _approve(alert, "policy:canary")
    session.add(alert)
    session.flush()
    _add_sources(session, alert, signal)
    audit(session, alert, SYSTEM, "create", None, blocked)
    return alert


def _add_sources(session: Session, alert: Alert,
                 signal: ContaminationSignalV1 | SpikeSignalV1) -> None:
    for evidence in signal.evidence_event_ids or [signal.event_id]:
        session.add(AlertSource(alert_id=alert.id, signal_event_id=signal.event_id,
                                evidence_event_id=evidence))
    session.flush()


def region_and_ancestors(region_id: str) -> list[str]:
    return Region(region_id, region_id, "UTC").ancestors()


def expire_if_due(alert: Alert) -> bool:
    """Mark an alert past its expiry `expired` (its pending messages are then skipped)."""
    if alert.expires_at is not None and alert.expires_at <= utcnow() and \
            alert.status in ("draft", "approved", "sending"):
        alert.status = "expired"
        alert.updated_at = utcnow()
        session = object_session(alert)
        if session is not None:
            alert_changed(session, alert, "expired")
        return True
    return False


def fan_out(session: Session, alert: Alert) -> int:
    """Create a pending delivery (in the subscriber's language) for every active subscriber
    of the alert's region or one of its parents, reading subscribers in pages. Returns how
    many were created. An expired alert sends nothing."""
    created, after = 0, None
    while True:
        count, after = fan_out_page(session, alert, after)
        created += count
        if after is None:
            return created


def fan_out_page(session: Session, alert: Alert,
                 after: uuid.UUID | None) -> tuple[int, uuid.UUID | None]:
    """One page of the fan-out (subscribers after `after`): returns how many deliveries were
    created and where to go on from (None: done). The worker commits each page apart, so a
    large fan-out never holds the database for long."""
    if after is None and expire_if_due(alert):
        return 0, None
    if alert.status not in ("approved", "sending"):
        return 0, None
    if alert.status == "approved":
        # A guarded write, and the texts read after it: an edit committed meanwhile (which
        # sends the alert back to review) makes this match nothing, and an edit that comes
        # after it finds the alert `sending` and is refused; what goes out was approved.
        moved = session.execute(
            update(Alert).where(Alert.id == alert.id, Alert.status == "approved")
            .values(status="sending").execution_options(synchronize_session=False))
        session.refresh(alert)
        if getattr(moved, "rowcount", 0) != 1:
            return 0, None
        alert_changed(session, alert, "sending")
    texts = alert.texts or {"en": alert.body_en}
    regions = region_and_ancestors(alert.region_id)
    query = (
        select(Subscriber.id, Subscriber.language)
        .where(Subscriber.status == "active")
        .where(exists().where(Subscription.subscriber_id == Subscriber.id,
                              Subscription.region_id.in_(regions)))
        .where(~exists().where(Delivery.alert_id == alert.id,
                               Delivery.subscriber_id == Subscriber.id))
        .where(Subscriber.is_test.is_(True) if alert.kind == "canary" else true())
        .order_by(Subscriber.id)
        .limit(PAGE_SIZE)
    )
    if after is not None:
        query = query.where(Subscriber.id > after)
    rows = session.execute(query).all()
    if not rows:
        return 0, None
    now = utcnow()
    bodies = {lang: texts.get(lang) or texts.get("en") or alert.body_en
              for lang in {lang for _sid, lang in rows}}
    segments = {lang: segment_count(body) for lang, body in bodies.items()}
    # One multi-row INSERT (no ORM objects: a page is a thousand rows). Time-ordered ids: the
    # jobs go out in id order, so each batch's claim and record touch a few neighbouring
    # index pages instead of pages all over the indexes (random ids).
    session.execute(insert(Delivery), [
        {"id": uuid7(), "alert_id": alert.id, "subscriber_id": sid, "purpose": "alert",
         "status": "pending", "body": bodies[lang], "segments": segments[lang],
         "attempts": 0, "created_at": now, "updated_at": now}
        for sid, lang in rows])
    return len(rows), rows[-1][0]


def pending_deliveries(session: Session, alert_id: uuid.UUID) -> Iterator[list[Delivery]]:
    """Pending deliveries of an alert, a page at a time."""
    last_id: uuid.UUID | None = None
    while True:
        query = (select(Delivery).where(Delivery.alert_id == alert_id,
                                        Delivery.status == "pending")
                 .order_by(Delivery.id).limit(PAGE_SIZE))
        if last_id is not None:
            query = query.where(Delivery.id > last_id)
        page = list(session.scalars(query))
        if not page:
            return
        yield page
        last_id = page[-1].id


def finish_if_done(session: Session, alert: Alert) -> bool:
    """A sending alert with nothing pending or in flight is `sent`."""
    if alert.status != "sending":
        return False
    # EXISTS, not a count: this runs every second while 100,000 messages are pending.
    left = session.scalar(select(exists().where(
        Delivery.alert_id == alert.id, Delivery.status.in_(("pending", "sending")))))
    if left:
        return False
    alert.status = "sent"
    alert.updated_at = utcnow()
    alert_changed(session, alert, "sent")
    return True


# ---- status callbacks -----------------------------------------------------------------------

# A delivery only moves forward: callbacks can come out of order.
STATUS_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3,
               "failed": 3}
EARLY_STATUS_DAYS = 1  # a callback no delivery claims within this is dropped


def record_status(session: Session, sid: str, status: str, error_code: str | None) -> str:
    """Apply a provider status callback to the delivery holding `sid`: "applied", "stale"
    (the delivery is already as far or further), or "early" (no delivery holds the SID yet:
    the callback beat the sender's record; kept in `alerts_sms_status_early` for
    `apply_early_statuses`). Writes first, so on SQLite the transaction holds the write lock
    before it reads."""
    rank = STATUS_RANK.get(status, -1)
    later_or_same = [s for s, r in STATUS_RANK.items() if r <= rank]
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if error_code:
        values["error_code"] = error_code
    changed = session.execute(
        update(Delivery).where(Delivery.provider_sid == sid,
                               Delivery.status.in_(later_or_same))
        .values(**values).returning(Delivery.id)
        .execution_options(synchronize_session=False)).first()
    if changed is not None:
        return "applied"
    if session.scalar(select(Delivery.id).where(Delivery.provider_sid == sid).limit(1)):
        return "stale"
    early = session.get(EarlyStatus, sid)
    if early is None:
        session.add(EarlyStatus(sid=sid, status=status, error_code=error_code,
                                received_at=utcnow()))
    elif rank >= STATUS_RANK.get(early.status, -1):
        early.status = status
        early.error_code = error_code or early.error_code
    return "early"


def apply_early_statuses(session: Session) -> int:
    """Callbacks kept for SIDs that deliveries now hold are applied and deleted; those older
    than EARLY_STATUS_DAYS are deleted (not ours, e.g. another app on the account)."""
    rows = session.execute(
        select(EarlyStatus.sid, EarlyStatus.status, EarlyStatus.error_code)
        .join(Delivery, Delivery.provider_sid == EarlyStatus.sid).limit(PAGE_SIZE)).all()
    for sid, status, error_code in rows:
        record_status(session, sid, status, error_code)
    if rows:
        session.execute(delete(EarlyStatus).where(EarlyStatus.sid.in_([r[0] for r in rows])))
    session.execute(delete(EarlyStatus).where(
        EarlyStatus.received_at < utcnow() - timedelta(days=EARLY_STATUS_DAYS)))
    return len(rows)


# ---- officials' actions ---------------------------------------------------------------------

def get_alert(session: Session, alert_id: uuid.UUID) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise ProblemError(404, "Not found", "No such alert.")
    return alert


def _require(alert: Alert, allowed: tuple[str, ...], action: str) -> None:
    if alert.status not in allowed:
        raise ProblemError(409, "Conflict",
                           f"Cannot {action} an alert that is {alert.status}.",
                           status_now=alert.status)


def _check_segments(texts: dict[str, str], force: bool) -> None:
    texts = {lang: strip_invisible(text) for lang, text in texts.items()}
    not_gsm7 = sorted(lang for lang, text in texts.items() if not is_gsm7(text))
    if not_gsm7 and not force:
        raise ProblemError(
            422, "Not plain SMS text",
            f"Not GSM-7: {', '.join(not_gsm7)}. A character outside the GSM-7 alphabet (an "
            "emoji, some accents) makes each SMS part hold 70 characters instead of 160. "
            "Rewrite it or send force=true.", segments=segments_of(texts))
    too_long = {lang: n for lang, n in segments_of(texts).items() if n > MAX_SEGMENTS}
    if too_long and not force:
        raise ProblemError(
            422, "Text too long",
            f"More than {MAX_SEGMENTS} SMS segments (306 GSM-7 characters): "
            f"{', '.join(f'{k}={v}' for k, v in sorted(too_long.items()))}. "
            "Shorten it or send force=true.", segments=segments_of(texts))


TEXT_AUTHORING = ("create", "edit", "update", "all_clear")


def needs_second_reviewer(settings: Settings | None, alert: Alert) -> bool:
    return settings is not None and alert.severity == "critical" and \
        policy_for(settings, alert.region_id).second_reviewer


def review_state(session: Session, alert: Alert) -> tuple[str | None, list[str]]:
    """The author of the alert's current text (None: the system) and the officials who
    gave a first approval since it was written."""
    rows = session.execute(select(AlertAudit.actor, AlertAudit.action)
                           .where(AlertAudit.alert_id == alert.id)
                           .order_by(AlertAudit.id)).all()
    author: str | None = None
    approvals: list[str] = []
    for actor, action in rows:
        if action in TEXT_AUTHORING:
            author = None if actor == SYSTEM else actor
            approvals = []
        elif action == "approve_first":
            approvals.append(actor)
    return author, approvals


def approve(session: Session, alert_id: uuid.UUID, actor: str, force: bool = False, *,
            settings: Settings | None = None, reason: str | None = None) -> Alert:
    """Approve a draft. Where the region's policy asks for a second reviewer (critical
    alerts), the first approval is recorded (`approve_first`) and the alert stays a draft
    until another official, not the author of the last edit, approves it too."""
    alert = get_alert(session, alert_id)
    _require(alert, ("draft",), "approve")
    if expire_if_due(alert):
        raise ProblemError(409, "Conflict", "The alert has expired.", status_now="expired")
    _check_segments(alert.texts or {"en": alert.body_en}, force)
    before = snapshot(alert)
    if needs_second_reviewer(settings, alert):
        author, approvals = review_state(session, alert)
        if not approvals:
            alert.updated_at = utcnow()
            audit(session, alert, actor, "approve_first", before, reason=reason)
            return alert
        if actor in approvals:
            raise ProblemError(409, "Second reviewer required",
                               f"{actor} approved already; a second, different reviewer "
                               "must approve this critical alert.", approvals=approvals)
        if actor == author:
            raise ProblemError(409, "Second reviewer required",
                               f"{actor} wrote the last edit of this text; another reviewer "
                               "must give the second approval.", approvals=approvals)
        _approve(alert, ", ".join([*approvals, actor])[:120])
    else:
        _approve(alert, actor)
    audit(session, alert, actor, "approve", before, reason=reason)
    return alert


def edit(session: Session, alert_id: uuid.UUID, actor: str, texts: dict[str, str],
         force: bool = False, expires_at: Any = None, *, reason: str | None = None) -> Alert:
    """Change the texts (or the expiry) of a draft, or of an approved alert that has not
    started going out: that one goes back to review (its approval is cleared; the audit's
    `before` keeps who had approved it)."""
    alert = get_alert(session, alert_id)
    _require(alert, ("draft", "approved"), "edit")
    unknown = set(texts) - set(LANGUAGES)
    if unknown:
        raise ProblemError(422, "Unknown language", f"Languages: {', '.join(LANGUAGES)}.")
    merged = {**(alert.texts or {}), **{k: v.strip() for k, v in texts.items()}}
    if any(not v for v in merged.values()):
        raise ProblemError(422, "Empty text", "A language's text is empty.")
    _check_segments(merged, force)
    before = snapshot(alert)
    if alert.status == "approved":
        # Guarded, as the fan-out's move to `sending` is: of the two, one wins.
        moved = session.execute(
            update(Alert).where(Alert.id == alert.id, Alert.status == "approved")
            .values(status="draft", approved_at=None, approved_by=None)
            .execution_options(synchronize_session=False))
        session.refresh(alert)
        if getattr(moved, "rowcount", 0) != 1:
            raise ProblemError(409, "Conflict", f"Cannot edit an alert that is {alert.status}.",
                               status_now=alert.status)
    _set_texts(alert, merged)
    if expires_at is not None:
        alert.expires_at = expires_at
    alert.updated_at = utcnow()
    audit(session, alert, actor, "edit", before,
          "edited after approval" if before["status"] == "approved" else None, reason=reason)
    return alert


def reject(session: Session, alert_id: uuid.UUID, actor: str, *,
           reason: str | None = None) -> Alert:
    alert = get_alert(session, alert_id)
    _require(alert, ("draft",), "reject")
    before = snapshot(alert)
    alert.status = "rejected"
    alert.updated_at = utcnow()
    audit(session, alert, actor, "reject", before, reason=reason)
    return alert


def cancel(session: Session, alert_id: uuid.UUID, actor: str, *,
           reason: str | None = None) -> Alert:
    """Stop an alert: nothing more is sent (pending messages are skipped)."""
    alert = get_alert(session, alert_id)
    _require(alert, ("draft", "approved", "sending"), "cancel")
    before = snapshot(alert)
    alert.status = "cancelled"
    alert.updated_at = utcnow()
    session.execute(update(Delivery).where(Delivery.alert_id == alert.id,
                                           Delivery.status == "pending")
                    .values(status="skipped", updated_at=utcnow()))
    audit(session, alert, actor, "cancel", before, reason=reason)
    return alert


def follow_up(session: Session, settings: Settings, alert_id: uuid.UUID, actor: str,
              kind: str, texts: dict[str, str] | None, force: bool = False, *,
              reason: str | None = None) -> Alert:
    """An update or an all-clear after an alert: a new draft alert (kind update/all_clear)
    for the same region, to approve like any other."""
    parent = get_alert(session, alert_id)
    _require(parent, ("approved", "sending", "sent", "expired"), kind.replace("_", "-"))
    if texts:
        new_texts = {k: v.strip() for k, v in texts.items() if k in LANGUAGES and v.strip()}
    elif kind == "all_clear":
        new_texts = all_clear_texts(parent.region_name)
    else:
        new_texts = update_texts(parent.texts or {"en": parent.body_en})
    if not new_texts:
        raise ProblemError(422, "Empty text", "Give the text of at least one language.")
    _check_segments(new_texts, force)
    now = utcnow()
    child = Alert(region_id=parent.region_id, region_name=parent.region_name,
                  substance_id=parent.substance_id, severity=parent.severity, status="draft",
                  created_at=now, kind=kind, parent_id=parent.id, signal_count=0,
                  expires_at=now + timedelta(hours=settings.alert_lifetime_hours))
    _set_texts(child, new_texts)
    session.add(child)
    session.flush()
    audit(session, child, actor, kind, None, reason=reason)
    audit(session, parent, actor, f"{kind}_drafted", snapshot(parent), reason=reason)
    return child
