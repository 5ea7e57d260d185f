"""An admin's edits of a service listing: availability, capacity and where hand-off
notices go (a webhook's URL checked as far as it can be before a send)."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import repository
from services.referrals.service.directory import invalidate_directory
from shared.db import utcnow
from shared.outbound import RefusedURLError, check_url, is_public
from shared.problems import ProblemError
from shared.settings import Settings

if TYPE_CHECKING:
    from services.referrals.schemas import ServiceUpdateIn

E164 = re.compile(r"\+[1-9]\d{7,14}")


def update_service(session: Session, settings: Settings, service_id: str,
                   body: ServiceUpdateIn) -> m.Service:
    svc = session.get(m.Service, service_id)
    if svc is None:
        raise ProblemError(404, "Not found", "no such service")
    now = utcnow()
    if body.accepting is not None:
        svc.accepting = body.accepting
    if body.notify_channel is not None:
        _check_channel(settings, body.notify_channel, body.notify_address)
        svc.notify_channel, svc.notify_address = body.notify_channel, body.notify_address
    if body.capacity_available is not None:
        _set_capacity(session, service_id, body.capacity_available, body.capacity_maximum,
                      now)
    svc.updated_at = now
    session.flush()
    invalidate_directory()
    return svc


def _check_channel(settings: Settings, channel: str, address: str | None) -> None:
    if not address:
        raise ProblemError(422, "notify_address required", "give the channel's address",
                           errors=[{"field": "/notify_address", "message": "required"}])
    if channel == "sms" and not E164.fullmatch(address):
        raise ProblemError(422, "Invalid notify_address",
                           "an SMS channel needs a number in E.164 form (+12065550101)",
                           errors=[{"field": "/notify_address",
                                    "message": "not an E.164 number"}])
    if channel == "webhook":
        _check_webhook(settings, address)


def _set_capacity(session: Session, service_id: str, available: float,
                  maximum: float | None, now: datetime) -> None:
    """The update states the whole current capacity: one row is kept, the others go."""
    rows = repository.capacity_rows(session, service_id)
    if rows:
        cap = rows[0]
        for other in rows[1:]:
            session.delete(other)
    else:
        cap = m.ServiceCapacity(id=f"{service_id}-capacity", service_id=service_id)
        session.add(cap)
    cap.available = available
    if maximum is not None:
        cap.maximum = maximum
    cap.updated = now


def _check_webhook(settings: Settings, url: str) -> None:
    """What can be told before sending: the scheme, and a literal address. Names are
    resolved and checked again at every send (`shared.outbound`)."""
    try:
        _scheme, host, _port, _path = check_url(url, require_https=settings.env == "prod")
        literal = host.strip("[]")
        if not settings.referrals_webhook_allow_private and _is_ip(literal) \
                and not is_public(literal):
            raise RefusedURLError("a private, loopback or link-local address")
    except RefusedURLError as exc:
        raise ProblemError(422, "Invalid notify_address", f"a webhook needs a public URL: {exc}",
                           errors=[{"field": "/notify_address", "message": str(exc)}]) from None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
