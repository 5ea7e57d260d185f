"""Officials' actions on an alert: approve (with a second reviewer where the policy asks),
edit, reject, cancel, and an update or all-clear after it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.alerts.models import Alert, AlertAudit, Delivery
from services.alerts.service.common import (
    MAX_SEGMENTS,
    SYSTEM,
    audit,
    mark_approved,
    segments_of,
    set_texts,
    snapshot,
)
from services.alerts.service.fanout import expire_if_due
from services.alerts.service.policy import policy_for
from services.alerts.templates import LANGUAGES, all_clear_texts, update_texts
from shared.db import utcnow
from shared.gsm import is_gsm7, strip_invisible
from shared.problems import ProblemError
from shared.settings import Settings


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
        mark_approved(alert, ", ".join([*approvals, actor])[:120])
    else:
        mark_approved(alert, actor)
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
    set_texts(alert, merged)
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
    set_texts(child, new_texts)
    session.add(child)
    session.flush()
    audit(session, child, actor, kind, None, reason=reason)
    audit(session, parent, actor, f"{kind}_drafted", snapshot(parent), reason=reason)
    return child
