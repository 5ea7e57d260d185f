"""A referral from its request to the person's choice: the request (web, staff or a
TREATMENT text), the options offered, and the SMS replies (a ZIP, a choice, the follow-up)."""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import texts
from services.referrals.geo import centroid, resolve_place
from services.referrals.matching import SERVICE_TYPES, TREATMENT, Match
from services.referrals.service.common import HandOff, record_event, set_status, text_person
from services.referrals.service.directory import find_matches
from shared.crypto import encrypt_phone
from shared.events import ContactStoppedV1, ReferralRequestedV1, SmsReceivedV1
from shared.problems import ProblemError
from shared.regions import RegionNotFoundError, get_region
from shared.settings import Settings

log = logging.getLogger(__name__)
YES_WORDS = {"YES", "Y", "SI", "OUI"}
NO_WORDS = {"NO", "N", "NON"}
# Fields a person may agree to share with the provider they choose.
SHAREABLE = ("service_type", "language", "region", "age", "payment", "note", "callback_phone")
SMS_CONSENT_FIELDS = ["service_type", "language", "region"]
SMS_CONSENT_WORDING = ("By texting TREATMENT you asked Lookout to find help. We share only the "
                       "kind of help, your language and your area with the one place you pick, "
                       "and delete this request after {days:g} days.")


@dataclass(frozen=True)
class ConsentIn:
    shared_fields: list[str]
    wording: str
    channel: str


# Words people text for a kind of help. Deliberately not the directory codes: "meth" is
# methamphetamine, not methadone, and "op" or "th" are ordinary words.
HELP_WORDS: dict[str, str] = {
    "bupe": "buprenorphine", "bup": "buprenorphine", "buprenorphine": "buprenorphine",
    "suboxone": "buprenorphine", "subutex": "buprenorphine", "sublocade": "buprenorphine",
    "methadone": "methadone", "metadona": "methadone", "otp": "methadone",
    "naltrexone": "naltrexone", "vivitrol": "naltrexone",
    "detox": "withdrawal_management", "withdrawal": "withdrawal_management",
    "residential": "residential", "rehab": "residential", "inpatient": "residential",
    "outpatient": "outpatient", "counseling": "mental_health", "counselling": "mental_health",
    "therapy": "mental_health", "syringe": "syringe_services", "syringes": "syringe_services",
    "needles": "syringe_services", "naloxone": "naloxone", "narcan": "naloxone",
    "housing": "housing", "shelter": "housing", "vivienda": "housing", "peer": "peer_support",
}


def parse_service_types(text: str | None) -> list[str]:
    """Kinds of help named in a message ("TREATMENT methadone"); default: treatment."""
    found: list[str] = []
    for word in re.findall(r"[a-z]+", (text or "").lower()):
        slug = HELP_WORDS.get(word)
        if slug and slug not in found:
            found.append(slug)
    return found or list(TREATMENT)



def create_referral(
    session: Session, settings: Settings, *, source: str, now: datetime, consent: ConsentIn,
    service_types: list[str], language: str = "en", region_id: str | None = None,
    payment: str | None = None, age: int | None = None, text: str | None = None,
    callback_phone: str | None = None, contact_ref: uuid.UUID | None = None,
    request_event_id: uuid.UUID | None = None, actor: str = "person",
    site_id: uuid.UUID | None = None,
) -> m.Referral:
    unknown = [t for t in service_types if t not in SERVICE_TYPES]
    if unknown:
        raise ProblemError(422, "Unknown service type", ", ".join(unknown),
                           known=sorted(SERVICE_TYPES))
    bad = [f for f in consent.shared_fields if f not in SHAREABLE]
    if bad:
        raise ProblemError(422, "Unknown consent field", ", ".join(bad), known=list(SHAREABLE))
    if region_id:
        try:
            get_region(region_id)
        except RegionNotFoundError:
            raise ProblemError(422, "Unknown region", region_id) from None
    referral = m.Referral(
        id=uuid.uuid4(), source=source, site_id=site_id, request_event_id=request_event_id,
        contact_ref=contact_ref, status="requested", service_types=service_types,
        language=language.lower()[:8], region_id=region_id, payment=payment, age=age,
        text=text,
        callback_phone_encrypted=encrypt_phone(settings.secret_key, callback_phone)
        if callback_phone else None,
        options=[], created_at=now, updated_at=now)
    session.add(referral)
    session.flush()
    session.add(m.Consent(
        referral_id=referral.id, shared_fields=list(consent.shared_fields),
        shared_with="the one provider the person chooses", channel=consent.channel,
        retain_until=now + timedelta(days=settings.referrals_retention_days),
        wording=consent.wording, given_at=now))
    record_event(session, referral, "requested", None, actor, now)
    return referral



def _option(match: Match) -> dict[str, Any]:
    e = match.entry
    return {"service_id": e.service_id, "service_at_location_id": e.service_at_location_id,
            "name": e.name, "address": e.address, "phone": e.phone,
            "distance_km": None if match.distance_km is None else round(match.distance_km, 1),
            "opens_in_minutes": match.opens_in_minutes,
            "closes_at": match.closes_at.strftime("%H:%M") if match.closes_at else None,
            "reasons": list(match.reasons)}


def offer_options(session: Session, settings: Settings, referral: m.Referral, now: datetime,
                  exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Match, record the options and (for SMS) text them; returns the options."""
    options = [_option(x) for x in find_matches(session, settings, referral, now, exclude)]
    referral.options = options
    referral.options_sent_at = now
    if options:
        referral.awaiting = "choice" if referral.contact_ref else None
        text_person(session, referral, texts.options_text(options, referral.language),
                    "referral_options", now)
    else:
        referral.awaiting = None
        text_person(session, referral, texts.none_found_text(referral.language),
                    "referral_none_found", now)
    set_status(session, referral, "options_sent", "system", now, check=False)
    if not options:
        referral.closed_at = now
    return options


def _seen(session: Session, event_id: uuid.UUID, now: datetime) -> bool:
    if session.scalar(select(m.ProcessedEvent.id).where(m.ProcessedEvent.event_id == event_id)):
        return True
    session.add(m.ProcessedEvent(event_id=event_id, processed_at=now))
    session.flush()
    return False


def handle_request(session: Session, settings: Settings, event: ReferralRequestedV1,
                   now: datetime) -> m.Referral | None:
    """A TREATMENT text forwarded by alerts. Idempotent on the event id."""
    if _seen(session, event.event_id, now):
        return None
    region_id = event.region_id
    if region_id is not None and centroid(region_id) is None:
        region_id = None  # a whole state or province is too coarse: ask for a ZIP code
    if region_id is None and event.raw_text:
        for token in re.findall(r"\b\d{5}\b", event.raw_text):
            place = resolve_place(token)
            if place is not None:
                region_id = place.id
                break
    # A new request replaces the person's open conversation.
    for old in _open_for(session, event.contact_ref):
        set_status(session, old, "no_response", "system", now, check=False)
    referral = create_referral(
        session, settings, source="sms", now=now, contact_ref=event.contact_ref,
        request_event_id=event.event_id, service_types=parse_service_types(event.raw_text),
        language=event.language, region_id=region_id, text=event.raw_text,
        consent=ConsentIn(SMS_CONSENT_FIELDS, SMS_CONSENT_WORDING.format(
            days=settings.referrals_retention_days), "sms"))
    if region_id is None:
        referral.awaiting = "location"
        text_person(session, referral, texts.ask_location_text(referral.language),
                    "referral_location", now)
    else:
        offer_options(session, settings, referral, now)
    return referral


def _open_for(session: Session, contact_ref: uuid.UUID) -> list[m.Referral]:
    return list(session.scalars(
        select(m.Referral).where(m.Referral.contact_ref == contact_ref,
                                 m.Referral.awaiting.is_not(None))
        .order_by(m.Referral.created_at.desc())))



def choose(session: Session, referral: m.Referral, number: int, actor: str,
           now: datetime) -> HandOff:
    if not 1 <= number <= len(referral.options):
        raise ProblemError(422, "No such option",
                           f"choose 1 to {len(referral.options)}")
    option = referral.options[number - 1]
    referral.chosen_service_id = option["service_id"]
    referral.awaiting = None
    set_status(session, referral, "chosen", actor, now)
    return HandOff(referral.id, option["service_id"])


def handle_stop(session: Session, event: ContactStoppedV1, now: datetime) -> int:
    """The contact texted STOP (alerts' `contacts.stops.v1`): its open referrals end as
    `stopped`, and nothing more is texted (alerts would not send it anyway). Idempotent on
    the event id; returns how many referrals ended."""
    if _seen(session, event.event_id, now):
        return 0
    open_referrals = _open_for(session, event.contact_ref)
    for referral in open_referrals:
        set_status(session, referral, "stopped", "person", now, check=False)
    return len(open_referrals)


def handle_reply(session: Session, settings: Settings, event: SmsReceivedV1,
                 now: datetime) -> HandOff | None:
    """A reply in a conversation (1/2/3, a ZIP). Idempotent on the event id. (A STOP never
    comes here: alerts handles it and announces it, `handle_stop`.)"""
    if _seen(session, event.event_id, now):
        return None
    body = event.body.strip()
    word = texts.gsm(body).upper().rstrip(".! ")  # "Sí" -> "SI"
    open_referrals = _open_for(session, event.contact_ref)
    if not open_referrals:
        log.info("reply with no open referral; ignored")
        return None
    referral = open_referrals[0]
    if referral.awaiting == "location":
        place = resolve_place(body)
        if place is None:
            text_person(session, referral, texts.ask_location_text(referral.language),
                        "referral_location", now)
            return None
        referral.region_id = place.id
        offer_options(session, settings, referral, now)
        return None
    number = int(word) if word.isdigit() else None
    if referral.awaiting == "choice":
        if number is None or not 1 <= number <= len(referral.options):
            text_person(session, referral,
                        texts.ask_choice_text(len(referral.options), referral.language),
                        "referral_options", now)
            return None
        return choose(session, referral, number, "person", now)
    if referral.awaiting == "handoff":
        log.info("reply before the follow-up; kept the conversation as it is")
        return None
    if referral.awaiting == "followup":
        if number == 1 or word in YES_WORDS:
            set_status(session, referral, "connected", "person", now)
            text_person(session, referral, texts.thanks_text(True, referral.language),
                        "referral_closed", now)
        elif number == 2 or word in NO_WORDS:
            set_status(session, referral, "declined", "person", now)
            text_person(session, referral, texts.thanks_text(False, referral.language),
                        "referral_closed", now)
        elif number == 3:
            tried = tuple(o["service_id"] for o in referral.options)
            offer_options(session, settings, referral, now, exclude=tried)
        else:
            text_person(session, referral, texts.followup_text(referral.language),
                        "referral_followup", now)
    return None
