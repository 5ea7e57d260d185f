"""Texts other services ask for (`sms.requests.v1`, e.g. referrals): one delivery per
request, keyed by the request's event id."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.alerts.models import Delivery, Subscriber
from shared.db import utcnow
from shared.events import SmsRequestedV1
from shared.gsm import segment_count

log = logging.getLogger(__name__)


def request_delivery(session: Session, request: SmsRequestedV1) -> uuid.UUID | None:
    """The delivery for this request (created once); None for an unknown contact."""
    existing = session.scalar(select(Delivery.id).where(Delivery.request_id == request.event_id))
    if existing is not None:
        return existing
    if session.get(Subscriber, request.contact_ref) is None:
        log.warning("sms request %s: unknown contact_ref", request.event_id)
        return None
    now = utcnow()
    delivery = Delivery(alert_id=None, request_id=request.event_id,
                        subscriber_id=request.contact_ref, purpose=request.purpose[:32],
                        body=request.body, segments=segment_count(request.body),
                        created_at=now, updated_at=now)
    session.add(delivery)
    session.flush()
    return delivery.id
