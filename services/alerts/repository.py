"""The alerts API's and worker's reads: one function per query."""

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


def pending_jobs(session: Session, alert_id: uuid.UUID, after: uuid.UUID | None,
                 limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(delivery, subscriber) of the alert's pending deliveries after `after`, in id order."""
    query = (select(Delivery.id, Delivery.subscriber_id)
             .where(Delivery.alert_id == alert_id, Delivery.status == "pending")
             .order_by(Delivery.id).limit(limit))
    if after is not None:
        query = query.where(Delivery.id > after)
    return [(d, s) for d, s in session.execute(query).all()]


def sending_alert_ids(session: Session) -> list[uuid.UUID]:
    return list(session.scalars(select(Alert.id).where(Alert.status == "sending")))


def open_alerts(session: Session) -> list[Alert]:
    return list(session.scalars(select(Alert).where(
        Alert.status.in_(("draft", "approved", "sending")))))


def delivery_target(session: Session, delivery_id: uuid.UUID
                    ) -> tuple[uuid.UUID | None, uuid.UUID] | None:
    """(alert, subscriber) of a delivery (the alert None for a text another service asked
    for), or None when there is no such delivery."""
    row = session.execute(select(Delivery.alert_id, Delivery.subscriber_id)
                          .where(Delivery.id == delivery_id)).first()
    return (row[0], row[1]) if row else None
