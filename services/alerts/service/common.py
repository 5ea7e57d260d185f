"""What the alert domains share: the statuses, the page size, an alert's texts and
segments, its approval, and the audit record (with its `alerts.events.v1` change)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.alerts.changes import alert_changed
from services.alerts.models import Alert, AlertAudit
from shared.db import utcnow
from shared.gsm import segment_count, strip_invisible

PAGE_SIZE = 1000
MAX_SEGMENTS = 2  # 306 GSM-7 characters
OPEN = ("draft", "approved", "sending")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
SYSTEM = "system"


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


def set_texts(alert: Alert, texts: dict[str, str]) -> None:
    texts = {lang: strip_invisible(text) for lang, text in texts.items()}
    alert.texts = texts
    alert.body_en = texts.get("en") or next(iter(texts.values()))
    alert.segments = max(segments_of(texts).values())


def mark_approved(alert: Alert, actor: str) -> None:
    alert.status = "approved"
    alert.approved_at = utcnow()
    alert.approved_by = actor
