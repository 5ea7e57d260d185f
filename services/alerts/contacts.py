"""Contacts (the `alerts_subscribers` table): phone validation, lookup by keyed hash,
areas, export and erasure. Functions take a session and never commit."""

from __future__ import annotations

import re
import uuid

import phonenumbers
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.alerts.models import Delivery, Subscriber, Subscription
from services.alerts.schemas import ConsentOut, MessageOut, SubscriberExport
from shared.crypto import decrypt_phone, encrypt_phone, phone_lookup_hash
from shared.db import utcnow
from shared.regions import Region, RegionNotFoundError, _catalog, by_postal_code, get_region
from shared.settings import Settings

# Statuses that may receive a text another service asked for (referral replies, codes).
TEXTABLE = {"pending", "active", "contact"}


class InvalidPhoneError(ValueError):
    pass


def normalize_phone(raw: str, default_region: str = "US", strict: bool = True) -> str:
    """E.164 ('+12065550101') from what a person typed; raises InvalidPhoneError."""
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneError("not a phone number") from exc
    ok = phonenumbers.is_valid_number(number) if strict else \
        phonenumbers.is_possible_number(number)
    if not ok:
        raise InvalidPhoneError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# Number types that can receive an SMS code: not premium-rate, shared-cost, toll-free,
# pagers or unknown ranges (Twilio's anti-pumping guidance: text only where you serve).
SMS_NUMBER_TYPES = {phonenumbers.PhoneNumberType.MOBILE,
                    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}


def served_number(e164: str, countries: list[str]) -> str | None:
    """Why a valid E.164 number may not get a code ('country', 'number_type'); None if it
    may."""
    number = phonenumbers.parse(e164)
    if phonenumbers.region_code_for_number(number) not in {c.upper() for c in countries}:
        return "country"
    if phonenumbers.number_type(number) not in SMS_NUMBER_TYPES:
        return "number_type"
    return None


def find(session: Session, settings: Settings, e164: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(
        Subscriber.phone_hash == phone_lookup_hash(settings.secret_key, e164)))


def get_or_create(session: Session, settings: Settings, e164: str, *, status: str = "contact",
                  language: str = "en") -> tuple[Subscriber, bool]:
    found = find(session, settings, e164)
    if found is not None:
        return found, False
    contact = Subscriber(phone_encrypted=encrypt_phone(settings.secret_key, e164),
                         phone_hash=phone_lookup_hash(settings.secret_key, e164),
                         status=status, language=language, created_at=utcnow())
    session.add(contact)
    session.flush()
    return contact, True


def resolve_area(text: str) -> Region:
    """A postal code (US ZIP) or an area name from the region catalog ('Vancouver')."""
    text = text.strip()
    if re.fullmatch(r"\d{5}(-\d{4})?", text):
        return by_postal_code(text)
    wanted = text.lower().replace(",", " ").split()
    for region, city, province in _catalog().values():
        names = {city.lower(), region.name.lower(), region.id.split("/")[-1]}
        if " ".join(wanted) in names or " ".join(wanted) == f"{city} {province}".lower():
            return region
    raise RegionNotFoundError(f"unknown area {text!r}")


def region_name(region_id: str) -> str:
    try:
        return get_region(region_id).name
    except RegionNotFoundError:
        return region_id.split("/")[-1]


def areas_of(session: Session, contact: Subscriber) -> list[str]:
    return list(session.scalars(select(Subscription.region_id)
                                .where(Subscription.subscriber_id == contact.id)
                                .order_by(Subscription.id)))


def add_areas(session: Session, contact: Subscriber, regions: list[Region]) -> None:
    have = set(areas_of(session, contact))
    for region in regions:
        if region.id not in have:
            session.add(Subscription(subscriber_id=contact.id, region_id=region.id))
            have.add(region.id)
    session.flush()


def remove_areas(session: Session, contact: Subscriber, regions: list[Region]) -> int:
    result = session.execute(delete(Subscription).where(
        Subscription.subscriber_id == contact.id,
        Subscription.region_id.in_([r.id for r in regions])))
    return int(getattr(result, "rowcount", 0) or 0)


def export(session: Session, settings: Settings, contact: Subscriber) -> SubscriberExport:
    """Everything held about one contact (the only place the number is shown decrypted)."""
    deliveries = session.scalars(select(Delivery).where(Delivery.subscriber_id == contact.id)
                                 .order_by(Delivery.created_at))
    return SubscriberExport(
        id=contact.id, phone=decrypt_phone(settings.secret_key, contact.phone_encrypted),
        status=contact.status, language=contact.language, areas=areas_of(session, contact),
        consent=ConsentOut(at=contact.consent_at, channel=contact.consent_channel,
                           wording=contact.consent_text),
        created_at=contact.created_at, stopped_at=contact.stopped_at,
        messages=[MessageOut.model_validate(d, from_attributes=True) for d in deliveries],
    )


def erase(session: Session, contact: Subscriber) -> None:
    """Erase the personal data: the number (encrypted value and hash replaced by random
    values), subscriptions, consent wording; pending messages are dropped. Deliveries keep
    only the opaque id (they never held the number)."""
    tombstone = "erased:" + uuid.uuid4().hex
    contact.phone_encrypted = tombstone
    contact.phone_hash = uuid.uuid4().hex + uuid.uuid4().hex
    contact.status = "erased"
    contact.consent_text = None
    contact.code_hash = None
    contact.conversation_until = None
    session.execute(delete(Subscription).where(Subscription.subscriber_id == contact.id))
    for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == contact.id,
                                                    Delivery.status == "pending")):
        d.status = "skipped"
