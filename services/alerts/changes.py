"""`alerts.events.v1`: every change of an alert, through the alerts outbox (same transaction
as the change), for the dashboard's read model.

Changes made by the lifecycle (`service.audit`, fan-out, sent, expiry) call
`alert_changed`; delivery counts move too fast for an event per message, so the worker's
dispatch timer calls `publish_delivery_counts` once a tick (one second): at most one event a
second per alert, and only when its counts changed.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import exists, func, or_, select, true
from sqlalchemy.orm import Session

from services.alerts.models import (
    Alert,
    AlertSource,
    Delivery,
    OutboxMessage,
    Subscriber,
    Subscription,
)
from shared.db import utcnow
from shared.events import AlertChangedV1
from shared.gsm import segment_count
from shared.outbox import outbox_row
from shared.regions import Region
from shared.topics import ALERT_EVENTS

PRODUCER = "alerts"
# Sent (or cancelled) alerts keep receiving status callbacks for a while.
COUNTS_FOLLOW_FOR = timedelta(hours=1)


def delivery_counts(session: Session, alert_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(select(Delivery.status, func.count())
                           .where(Delivery.alert_id == alert_id)
                           .group_by(Delivery.status)).all()
    return {status: int(count) for status, count in rows}


def audience(session: Session, alert: Alert) -> int:
    """Active subscribers of the alert's region or a parent (test ones only for a canary):
    whom a fan-out now would reach."""
    regions = Region(alert.region_id, alert.region_id, "UTC").ancestors()
    return int(session.scalar(
        select(func.count()).select_from(Subscriber)
        .where(Subscriber.status == "active")
        .where(exists().where(Subscription.subscriber_id == Subscriber.id,
                              Subscription.region_id.in_(regions)))
        .where(Subscriber.is_test.is_(True) if alert.kind == "canary" else true())) or 0)


def build_event(session: Session, alert: Alert, action: str, actor: str,
                review_reason: str | None = None,
                counts: dict[str, int] | None = None) -> AlertChangedV1:
    session.flush()
    texts = dict(alert.texts or {"en": alert.body_en})
    counts = delivery_counts(session, alert.id) if counts is None else counts
    signals = session.scalars(select(AlertSource.signal_event_id)
                              .where(AlertSource.alert_id == alert.id)
                              .group_by(AlertSource.signal_event_id)
                              .order_by(func.min(AlertSource.id)))
    size = sum(counts.values()) if counts else audience(session, alert)
    return AlertChangedV1(
        producer=PRODUCER, alert_id=alert.id, occurred_at=utcnow(), action=action,
        actor=actor, status=alert.status, kind=alert.kind,
        severity=alert.severity,
        region_id=alert.region_id, region_name=alert.region_name,
        substance_id=alert.substance_id, texts=texts,
        segments={lang: segment_count(text) for lang, text in texts.items()},
        signal_event_ids=list(signals), review_reason=review_reason, audience=size,
        deliveries=counts, created_at=alert.created_at, approved_at=alert.approved_at,
        approved_by=alert.approved_by, expires_at=alert.expires_at, parent_id=alert.parent_id,
        canary=alert.kind == "canary")


def alert_changed(session: Session, alert: Alert, action: str, actor: str = "system",
                  review_reason: str | None = None) -> None:
    """Add the outbox row announcing this change to the change's own session."""
    event = build_event(session, alert, action, actor, review_reason)
    session.add(outbox_row(OutboxMessage, ALERT_EVENTS, str(alert.id), event))


def publish_delivery_counts(session: Session, last: dict[uuid.UUID, dict[str, int]]) -> int:
    """One `deliveries` event for each alert being sent (or sent or cancelled within
    COUNTS_FOLLOW_FOR) whose delivery counts differ from `last` (what this process published
    before; updated here). Returns how many events were added. A restart publishes each
    once more, which consumers take as the same state."""
    since = utcnow() - COUNTS_FOLLOW_FOR
    alerts = list(session.scalars(select(Alert).where(or_(
        Alert.status == "sending",
        Alert.status.in_(("sent", "cancelled")) & (Alert.updated_at >= since)))))
    added = 0
    for alert in alerts:
        counts = delivery_counts(session, alert.id)
        if not counts or counts == last.get(alert.id):
            continue
        event = build_event(session, alert, "deliveries", "system", counts=counts)
        session.add(outbox_row(OutboxMessage, ALERT_EVENTS, str(alert.id), event))
        last[alert.id] = counts
        added += 1
    followed = {alert.id for alert in alerts}
    for alert_id in [a for a in last if a not in followed]:
        del last[alert_id]  # no longer followed
    return added
