"""What every referral domain shares: the statuses and their allowed changes, a status
change (with its event on the outbox) and a text to the person (an `SmsRequestedV1`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy.orm import Session

from services.referrals import models as m
from shared.events import ReferralEventV1, SmsRequestedV1
from shared.outbox import outbox_row
from shared.problems import ProblemError
from shared.topics import REFERRAL_EVENTS, SMS_REQUESTS

PRODUCER = "referrals"
STATUS_CHANGES = Counter("lookout_referrals_status_changes_total",
                         "Referral status changes", ["status", "source"])
OPEN = ("requested", "options_sent", "chosen", "provider_notified")
FINAL = ("connected", "declined", "no_response", "stopped")
# Provider or staff updates allowed from each status.
TRANSITIONS: dict[str, set[str]] = {
    "requested": {"options_sent", "chosen", "declined", "no_response", "stopped"},
    "options_sent": {"options_sent", "chosen", "declined", "no_response", "stopped"},
    "chosen": {"provider_notified", "connected", "declined", "no_response", "stopped"},
    "provider_notified": {"connected", "declined", "no_response", "stopped", "options_sent"},
    "no_response": {"connected", "declined", "options_sent", "chosen"},
    "connected": set(),
    "declined": {"connected"},
    "stopped": set(),
}



def record_event(session: Session, referral: m.Referral, status: str, previous: str | None,
           actor: str, now: datetime) -> None:
    session.add(m.StatusChange(referral_id=referral.id, status=status,
                               previous_status=previous, actor=actor, at=now))
    STATUS_CHANGES.labels(status, referral.source).inc()
    event = ReferralEventV1(
        producer=PRODUCER, referral_id=referral.id, status=status,
        previous_status=previous, occurred_at=now,
        source=referral.source, actor=actor,
        service_types=list(referral.service_types), region_id=referral.region_id,
        language=referral.language, provider_service_id=referral.chosen_service_id,
        option_count=len(referral.options or []))
    session.add(outbox_row(m.OutboxMessage, REFERRAL_EVENTS, str(referral.id), event))


def set_status(session: Session, referral: m.Referral, status: str, actor: str,
               now: datetime, *, check: bool = True) -> None:
    previous = referral.status
    if check and status not in TRANSITIONS.get(previous, set()):
        raise ProblemError(409, "Status change not allowed",
                           f"a referral that is {previous!r} cannot become {status!r}")
    referral.status = status
    referral.updated_at = now
    if status in FINAL:
        referral.closed_at = now
        referral.awaiting = None
    record_event(session, referral, status, previous, actor, now)


def text_person(session: Session, referral: m.Referral, body: str, purpose: str,
                now: datetime) -> None:
    if referral.contact_ref is None:
        return
    sms = SmsRequestedV1(producer=PRODUCER, contact_ref=referral.contact_ref, body=body,
                         purpose=purpose, requested_at=now)
    session.add(outbox_row(m.OutboxMessage, SMS_REQUESTS, str(referral.contact_ref), sms))



@dataclass(frozen=True)
class HandOff:
    """A choice made: the provider is to be notified (outside the transaction)."""

    referral_id: uuid.UUID
    service_id: str
