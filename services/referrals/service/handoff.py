"""The provider hand-off: the signed status link, the notice (only the consented fields),
its claim, send and record, and the provider's status updates."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import texts
from services.referrals.notify import NotifierError, ProviderNotifier
from services.referrals.service.common import HandOff, set_status, text_person
from shared.crypto import decrypt_phone
from shared.db import session_scope
from shared.problems import ProblemError
from shared.regions import RegionNotFoundError, get_region
from shared.settings import Settings

log = logging.getLogger(__name__)


def link_token(settings: Settings, referral_id: uuid.UUID, service_id: str,
               expires: int) -> str:
    """`<expiry, Unix seconds>.<HMAC of the referral, the provider and the expiry>`."""
    message = f"referral-link:{referral_id}:{service_id}:{expires}".encode()
    mac = hmac.new(settings.secret_key.encode(), message, hashlib.sha256).hexdigest()[:32]
    return f"{expires}.{mac}"


def provider_link(settings: Settings, referral_id: uuid.UUID, service_id: str,
                  issued: datetime) -> str:
    base = settings.referrals_public_url or settings.service_url(settings.referrals_port)
    expires = int((issued + timedelta(days=settings.referrals_link_days)).timestamp())
    token = link_token(settings, referral_id, service_id, expires)
    return f"{base.rstrip('/')}/r/{referral_id}?t={token}"


def check_link(session: Session, settings: Settings, referral_id: uuid.UUID, token: str,
               now: datetime) -> m.Referral:
    """The referral a provider's link opens. An unknown referral and a wrong token get the
    same answer (nothing tells which referral ids exist); a genuine link past its expiry
    says so (410)."""
    referral = session.get(m.Referral, referral_id)
    stamp, _dot, _mac = token.partition(".")
    expires = int(stamp) if stamp.isdigit() and len(stamp) <= 12 else 0
    expected = link_token(settings, referral_id,
                          (referral.chosen_service_id if referral else None) or "", expires)
    if not hmac.compare_digest(token.encode(), expected.encode()) or referral is None \
            or not referral.chosen_service_id:
        raise ProblemError(404, "Not found", "This link is not valid.")
    if now.timestamp() >= expires:
        raise ProblemError(410, "Link expired",
                           "This link has expired: please contact the referral's staff.")
    return referral


def notice_for(settings: Settings, referral: m.Referral, consent: m.Consent,
               service: m.Service) -> dict[str, Any]:
    """What the provider is told: the referral, the link, and only the consented fields."""
    notice: dict[str, Any] = {
        "referral_id": str(referral.id), "service_id": service.id, "service_name": service.name,
        "status_link": provider_link(settings, referral.id, service.id, referral.updated_at),
        "consent": {"shared_fields": list(consent.shared_fields),
                    "retain_until": consent.retain_until.isoformat()},
    }
    shared = set(consent.shared_fields)
    if "service_type" in shared:
        notice["service_types"] = list(referral.service_types)
    if "language" in shared:
        notice["language"] = referral.language
    if "region" in shared and referral.region_id:
        try:
            notice["region"] = get_region(referral.region_id).name
        except RegionNotFoundError:
            notice["region"] = referral.region_id
    if "age" in shared and referral.age is not None:
        notice["age"] = referral.age
    if "payment" in shared and referral.payment:
        notice["payment"] = referral.payment
    if "note" in shared and referral.text:
        notice["note"] = referral.text
    if "callback_phone" in shared and referral.callback_phone_encrypted:
        notice["callback_phone"] = decrypt_phone(settings.secret_key,
                                                 referral.callback_phone_encrypted)
    return notice


PHONE_REFERENCE = "referral.callback_phone_encrypted"


def stored_notice(notice: dict[str, Any]) -> dict[str, Any]:
    """The notice as kept in `referrals_provider_notices`: the callback number is not
    stored again (in clear) but referred to; it stays encrypted on the referral."""
    if "callback_phone" not in notice:
        return dict(notice)
    kept = {k: v for k, v in notice.items() if k != "callback_phone"}
    kept["callback_phone_ref"] = PHONE_REFERENCE
    return kept


def prepare_notice(session: Session, settings: Settings, handoff: HandOff
                   ) -> tuple[str | None, str | None, dict[str, Any]]:
    referral = session.get(m.Referral, handoff.referral_id)
    service = session.get(m.Service, handoff.service_id)
    consent = session.scalar(select(m.Consent).where(m.Consent.referral_id == handoff.referral_id))
    if referral is None or service is None or consent is None:
        raise LookupError("referral, service or consent missing")
    return (service.notify_channel, service.notify_address,
            notice_for(settings, referral, consent, service))


def deliver_notice(notifier: ProviderNotifier, channel: str | None, address: str | None,
                   notice: dict[str, Any]) -> tuple[str, str | None]:
    """Send it; (status, error). No channel: staff read it on the referral page."""
    if not channel or not address:
        return "manual", None
    try:
        notifier.send(channel, address, notice)
        return "sent", None
    except NotifierError as exc:
        log.warning("provider notice failed: %s", exc)
        return "failed", str(exc)


def record_notice(session: Session, settings: Settings, handoff: HandOff, channel: str | None,
                  notice: dict[str, Any], status: str, error: str | None,
                  now: datetime) -> None:
    """After the send: keep the notice, move the status, text the person the details."""
    referral = session.get(m.Referral, handoff.referral_id)
    assert referral is not None
    session.add(m.ProviderNotice(referral_id=referral.id, service_id=handoff.service_id,
                                 channel=channel or "manual", payload=stored_notice(notice),
                                 status=status,
                                 error=error, created_at=now))
    if status != "failed" and referral.status == "chosen":
        set_status(session, referral, "provider_notified", "system", now)
        referral.notified_at = now
    option = next(o for o in referral.options if o["service_id"] == handoff.service_id)
    text_person(session, referral, texts.details_text(
        option["name"], option["address"] or "-", texts.hours_text(option, referral.language),
        option["phone"] or "-", referral.language), "referral_details", now)
    if referral.contact_ref is not None:
        referral.awaiting = "handoff"  # answers count once the follow-up has asked


def hand_off(session: Session, settings: Settings, notifier: ProviderNotifier,
             handoff: HandOff, now: datetime) -> str:
    """All of the hand-off in one session (API and tests); the worker splits it in two."""
    channel, address, notice = prepare_notice(session, settings, handoff)
    status, error = deliver_notice(notifier, channel, address, notice)
    record_notice(session, settings, handoff, channel, notice, status, error, now)
    return status


NOTICE_STALE_SECONDS = 60.0  # a claim (or a choice) this old without a notice: sender gone


def claim_notice(session: Session, handoff: HandOff, now: datetime,
                 stale_seconds: float = NOTICE_STALE_SECONDS) -> bool:
    """Take the provider notice of this hand-off to send it: one conditional UPDATE (a
    compare-and-set on `notice_claimed_at`), committed before the provider is called, so of
    two workers that both pick the notice only one sends it. A claim older than
    `stale_seconds` whose notice was never recorded (its sender died) may be taken again."""
    stale = now - timedelta(seconds=stale_seconds)
    claimed = session.execute(
        update(m.Referral).where(
            m.Referral.id == handoff.referral_id,
            or_(m.Referral.notice_claimed_at.is_(None), m.Referral.notice_claimed_at <= stale),
            ~exists().where(m.ProviderNotice.referral_id == handoff.referral_id))
        .values(notice_claimed_at=now).execution_options(synchronize_session=False))
    return getattr(claimed, "rowcount", 0) == 1


def notify_and_record(settings: Settings, notifier: ProviderNotifier, handoff: HandOff,
                      clock: Callable[[], datetime]) -> str | None:
    """The hand-off of a committed choice, each side in its own transaction and no
    transaction held while the provider is told (API and worker, off their request path).
    The notice is claimed first (`claim_notice`, committed with the read); None: another
    worker holds it, nothing is sent."""
    with session_scope(settings.sqlalchemy_url) as session:
        if not claim_notice(session, handoff, clock()):
            log.info("referral %s: provider notice taken by another worker", handoff.referral_id)
            return None
        channel, address, notice = prepare_notice(session, settings, handoff)
    status, error = deliver_notice(notifier, channel, address, notice)
    with session_scope(settings.sqlalchemy_url) as session:
        record_notice(session, settings, handoff, channel, notice, status, error, clock())
    log.info("referral %s: provider notice %s", handoff.referral_id, status)
    return status


def provider_update(session: Session, settings: Settings, referral_id: uuid.UUID,
                    status: str, actor: str, now: datetime, token: str | None = None) -> m.Referral:
    if token is not None:
        referral = check_link(session, settings, referral_id, token, now)
    else:
        found = session.get(m.Referral, referral_id)
        if found is None:
            raise ProblemError(404, "Not found", "no such referral")
        referral = found
    if status not in ("connected", "declined", "no_response"):
        raise ProblemError(422, "Unknown status", "connected, declined or no_response")
    set_status(session, referral, status, actor, now)
    return referral


def stuck_hand_offs(session: Session, now: datetime,
                    after_seconds: float = NOTICE_STALE_SECONDS) -> list[HandOff]:
    """Referrals chosen a while ago whose provider notice was never recorded and is not
    being sent (no claim, or a stale one). Each must still be claimed before it is sent."""
    noticed = select(m.ProviderNotice.referral_id)
    stale = now - timedelta(seconds=after_seconds)
    return [HandOff(r.id, r.chosen_service_id or "") for r in session.scalars(
        select(m.Referral).where(
            m.Referral.status == "chosen", m.Referral.chosen_service_id.is_not(None),
            m.Referral.updated_at <= stale,
            or_(m.Referral.notice_claimed_at.is_(None), m.Referral.notice_claimed_at <= stale),
            m.Referral.id.not_in(noticed)))]
