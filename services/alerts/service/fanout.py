"""Fan-out: one pending delivery per opted-in subscriber of the alert's region or a
parent, a page at a time; expiry, and the end of sending."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from sqlalchemy import exists, insert, select, true, update
from sqlalchemy.orm import Session, object_session

from services.alerts.changes import alert_changed
from services.alerts.models import Alert, Delivery, Subscriber, Subscription
from services.alerts.service.common import PAGE_SIZE
from shared.db import utcnow
from shared.gsm import segment_count
from shared.ids import uuid7
from shared.regions import Region


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
