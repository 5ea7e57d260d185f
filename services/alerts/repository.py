"""The alerts API's reads: one function per query."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.alerts.models import Alert, AlertAudit, AlertSource, Delivery, DevOutboxMessage


def recent_deliveries(session: Session, limit: int,
                      evidence_event_id: uuid.UUID | None = None) -> list[Delivery]:
    """Newest first; with `evidence_event_id`, those of alerts built from that event."""
    query = select(Delivery).order_by(Delivery.created_at.desc()).limit(limit)
    if evidence_event_id is not None:
        query = query.where(Delivery.alert_id.in_(
            select(AlertSource.alert_id).where(AlertSource.evidence_event_id == evidence_event_id)
        ))
    return list(session.scalars(query))


def sends_in_flight(session: Session, subscriber_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).select_from(Delivery).where(
        Delivery.subscriber_id == subscriber_id, Delivery.status == "sending")) or 0


def alerts(session: Session, status: str | None, limit: int) -> list[Alert]:
    query = select(Alert).order_by(Alert.created_at.desc()).limit(limit)
    if status:
        query = query.where(Alert.status == status)
    return list(session.scalars(query))


def delivery_counts(session: Session, alert_id: uuid.UUID) -> dict[str, int]:
    counts = session.execute(select(Delivery.status, func.count())
                             .where(Delivery.alert_id == alert_id)
                             .group_by(Delivery.status)).all()
    return {status: n for status, n in counts}


def audit_of(session: Session, alert_id: uuid.UUID) -> list[AlertAudit]:
    return list(session.scalars(select(AlertAudit).where(AlertAudit.alert_id == alert_id)
                                .order_by(AlertAudit.id)))


def dev_outbox(session: Session, limit: int) -> list[DevOutboxMessage]:
    return list(session.scalars(select(DevOutboxMessage).order_by(DevOutboxMessage.id.desc())
                                .limit(limit)))
