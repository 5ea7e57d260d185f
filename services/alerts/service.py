"""Alert lifecycle: signal -> alert (draft or auto-approved) -> one delivery per subscriber.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from services.alerts.models import Alert, AlertSource, Delivery, Subscriber, Subscription
from services.alerts.templates import alert_text
from shared.db import utcnow
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.gsm import segment_count
from shared.regions import Region
from shared.settings import Settings

ALERT_LIFETIME = timedelta(hours=72)
PAGE_SIZE = 1000


def auto_approves(settings: Settings, severity: str) -> bool:
    """Dev policy approves everything; otherwise the configured severities only."""
    return settings.env == "dev" or severity in settings.auto_approve_severities


def alert_from_signal(
    session: Session, settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1
) -> Alert:
    """The alert built from this signal; the same signal again returns the same alert."""
    existing = session.scalar(
        select(Alert).join(AlertSource, AlertSource.alert_id == Alert.id)
        .where(AlertSource.signal_event_id == signal.event_id)
    )
    if existing is not None:
        return existing
    body = alert_text(signal)
    now = utcnow()
    approved = auto_approves(settings, signal.severity)
    alert = Alert(
        region_id=signal.region_id, region_name=signal.region_name,
        substance_id=getattr(signal, "substance_id", None), severity=signal.severity,
        status="approved" if approved else "draft", body_en=body, segments=segment_count(body),
        created_at=now, approved_at=now if approved else None,
        approved_by="policy:auto" if approved else None, expires_at=now + ALERT_LIFETIME,
    )
    session.add(alert)
    session.flush()
    for evidence in signal.evidence_event_ids or [signal.event_id]:
        session.add(AlertSource(alert_id=alert.id, signal_event_id=signal.event_id,
                                evidence_event_id=evidence))
    return alert


def region_and_ancestors(region_id: str) -> list[str]:
    return Region(region_id, region_id, "UTC").ancestors()


def fan_out(session: Session, alert: Alert) -> int:
    """Create a pending delivery for every active subscriber of the alert's region or one of
    its parents, reading subscribers in pages. Returns how many were created."""
    if alert.status not in ("approved", "sending"):
        return 0
    created = 0
    last_id: uuid.UUID | None = None
    regions = region_and_ancestors(alert.region_id)
    while True:
        query = (
            select(Subscriber.id)
            .where(Subscriber.status == "active")
            .where(exists().where(Subscription.subscriber_id == Subscriber.id,
                                  Subscription.region_id.in_(regions)))
            .where(~exists().where(Delivery.alert_id == alert.id,
                                   Delivery.subscriber_id == Subscriber.id))
            .order_by(Subscriber.id)
            .limit(PAGE_SIZE)
        )
        if last_id is not None:
            query = query.where(Subscriber.id > last_id)
        ids = list(session.scalars(query))
        if not ids:
            break
        for subscriber_id in ids:
            session.add(Delivery(alert_id=alert.id, subscriber_id=subscriber_id,
                                 body=alert.body_en, segments=alert.segments))
        session.flush()
        created += len(ids)
        last_id = ids[-1]
    alert.status = "sending"
    return created


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
