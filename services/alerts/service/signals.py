"""Signal -> alert: the same signal returns the same alert; one of the same region and
substance within the merge window joins the open alert; otherwise a new alert, approved by
policy or left as a draft. Canary signals get a test alert of their own."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.alerts.models import Alert, AlertSource
from services.alerts.service.common import (
    OPEN,
    SEVERITY_RANK,
    SYSTEM,
    audit,
    mark_approved,
    set_texts,
    snapshot,
)
from services.alerts.service.policy import approval_block, auto_approves, text_block
from services.alerts.templates import alert_texts
from shared.db import utcnow
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.settings import Settings

log = logging.getLogger(__name__)


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
                set_texts(open_alert, alert_texts(signal))
            if open_alert.status == "approved" and text_block(open_alert.texts):
                open_alert.status = "draft"  # its new text needs a reviewer's look
                open_alert.approved_at = open_alert.approved_by = None
        if open_alert.status == "draft" and auto_approves(settings, signal, open_alert.severity):
            # A signal that qualifies by itself (at the alert's severity; e.g. lab-confirmed,
            # or not an as-sold novel substance) approves the draft, with its own text.
            set_texts(open_alert, alert_texts(
                signal.model_copy(update={"severity": open_alert.severity})))
            mark_approved(open_alert, "policy:auto")
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
    set_texts(alert, texts)
    blocked = approval_block(settings, signal)
    if blocked is None:
        mark_approved(alert, "policy:auto")
    else:
        log.info("alert for signal %s left for review (%s)", signal.event_id, blocked)
    return _created(session, alert, signal, blocked)


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
    set_texts(alert, {lang: f"[TEST] {text}" for lang, text in alert_texts(signal).items()})
    blocked = text_block(alert.texts)
    if blocked is None:
        mark_approved(alert, "policy:canary")
    return _created(session, alert, signal, blocked)


def _created(session: Session, alert: Alert, signal: ContaminationSignalV1 | SpikeSignalV1,
             review_reason: str | None) -> Alert:
    """A new alert stored with its sources, and its creation audited."""
    session.add(alert)
    session.flush()
    _add_sources(session, alert, signal)
    audit(session, alert, SYSTEM, "create", None, review_reason)
    return alert


def _add_sources(session: Session, alert: Alert,
                 signal: ContaminationSignalV1 | SpikeSignalV1) -> None:
    for evidence in signal.evidence_event_ids or [signal.event_id]:
        session.add(AlertSource(alert_id=alert.id, signal_event_id=signal.event_id,
                                evidence_event_id=evidence))
    session.flush()
