"""Referral workflow: requests, matching against the directory, the SMS conversation, the
provider hand-off, follow-up and purge. Functions take a session and never commit; every
status change writes a `ReferralEventV1` and every text an `SmsRequestedV1` to the outbox in
the same transaction. `now` is always passed in, so tests drive time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import texts
from services.referrals.geo import centroid, region_time_zone, resolve_place
from services.referrals.matching import (
    DAYS,
    SERVICE_TYPES,
    TREATMENT,
    DirectoryIndex,
    Entry,
    Hours,
    Match,
    Request,
)
from services.referrals.matching import match as match_entries
from services.referrals.notify import NotifierError, ProviderNotifier
from shared.crypto import decrypt_phone, encrypt_phone, hash_api_key
from shared.db import session_scope
from shared.events import (
    ContactStoppedV1,
    ReferralEventV1,
    ReferralRequestedV1,
    SiteKeyChangedV1,
    SmsReceivedV1,
    SmsRequestedV1,
)
from shared.outbox import outbox_row
from shared.problems import ProblemError
from shared.regions import RegionNotFoundError, get_region
from shared.settings import Settings
from shared.topics import REFERRAL_EVENTS, SMS_REQUESTS

log = logging.getLogger(__name__)
PRODUCER = "referrals"
STATUS_CHANGES = Counter("lookout_referrals_status_changes_total",
                         "Referral status changes", ["status", "source"])
OPEN = ("requested", "options_sent", "chosen", "provider_notified")
FINAL = ("connected", "declined", "no_response", "stopped")
YES_WORDS = {"YES", "Y", "SI", "OUI"}
NO_WORDS = {"NO", "N", "NON"}
# Fields a person may agree to share with the provider they choose.
SHAREABLE = ("service_type", "language", "region", "age", "payment", "note", "callback_phone")
SMS_CONSENT_FIELDS = ["service_type", "language", "region"]
SMS_CONSENT_WORDING = ("By texting TREATMENT you asked Lookout to find help. We share only the "
                       "kind of help, your language and your area with the one place you pick, "
                       "and delete this request after {days:g} days.")
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


# ---------------------------------------------------------------------------- directory

def _hours(row: m.Schedule) -> Hours | None:
    def parse(text: str) -> tuple[Any, timedelta | None]:
        from datetime import time

        hh, mm = int(text[0:2]), int(text[3:5])
        rest = text[5:]
        if rest.startswith(":"):
            rest = rest[3:]
        offset = None
        if rest == "Z":
            offset = timedelta(0)
        elif rest:
            sign = -1 if rest[0] == "-" else 1
            digits = rest[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
        return time(hh, mm), offset

    if not row.opens_at or not row.closes_at:
        return None
    opens, offset = parse(row.opens_at)
    closes, _ = parse(row.closes_at)
    days = frozenset(d for d in (row.byday or "").split(",") if d in DAYS)
    return Hours(days, opens, closes, offset, row.valid_from, row.valid_to)


def load_entries(session: Session) -> list[Entry]:
    """Every active service at each of its locations, flattened for matching."""
    services = {s.id: s for s in session.scalars(
        select(m.Service).where(m.Service.status == "active"))}
    locations = {loc.id: loc for loc in session.scalars(select(m.Location))}
    by_sal: dict[str, list[Hours]] = defaultdict(list)
    by_service: dict[str, list[Hours]] = defaultdict(list)
    by_location: dict[str, list[Hours]] = defaultdict(list)
    for row in session.scalars(select(m.Schedule)):
        parsed = _hours(row)
        if parsed is None:
            continue
        if row.service_at_location_id:
            by_sal[row.service_at_location_id].append(parsed)
        elif row.service_id:
            by_service[row.service_id].append(parsed)
        elif row.location_id:
            by_location[row.location_id].append(parsed)
    languages: dict[str, set[str]] = defaultdict(set)
    for lang in session.scalars(select(m.Language)):
        code = (lang.code or (lang.name or "")[:2]).lower()
        languages[lang.service_id or ""].add(code)
        languages["loc:" + (lang.location_id or "")].add(code)
    capacity: dict[str, float] = defaultdict(float)
    for cap in session.scalars(select(m.ServiceCapacity)):
        capacity[cap.service_id] += cap.available
    free = {c.service_id for c in session.scalars(select(m.CostOption))
            if c.amount is not None and c.amount == 0}
    phones: dict[str, str] = {}
    for phone in session.scalars(select(m.Phone).order_by(m.Phone.id)):
        for key in (phone.service_at_location_id, phone.service_id,
                    "loc:" + (phone.location_id or ""), "org:" + (phone.organization_id or "")):
            if key and key not in ("loc:", "org:"):
                phones.setdefault(key, phone.number)
    entries = []
    for sal in session.scalars(select(m.ServiceAtLocation).order_by(m.ServiceAtLocation.id)):
        svc, loc = services.get(sal.service_id), locations.get(sal.location_id)
        if svc is None or loc is None:
            continue
        point = ((loc.latitude, loc.longitude) if loc.latitude is not None
                 and loc.longitude is not None else centroid(loc.region_id or ""))
        hours = by_sal.get(sal.id) or by_service.get(svc.id) or by_location.get(loc.id) or []
        address = ", ".join(p for p in (loc.address_1, loc.city) if p)
        entries.append(Entry(
            service_id=svc.id, service_at_location_id=sal.id, name=svc.name,
            service_types=frozenset(svc.service_types), point=point, hours=tuple(hours),
            time_zone=region_time_zone(loc.region_id, "") or None,
            languages=frozenset(languages[svc.id] | languages["loc:" + loc.id]),
            interpretation=bool(svc.interpretation_services),
            payment=frozenset(svc.payment_options) | ({"free"} if svc.id in free else set()),
            minimum_age=svc.minimum_age, maximum_age=svc.maximum_age,
            capacity_available=capacity[svc.id] if svc.id in capacity else None,
            accepting=svc.accepting, address=address,
            phone=phones.get(sal.id) or phones.get(svc.id) or phones.get("loc:" + loc.id)
            or phones.get("org:" + svc.organization_id, "")))
    return entries


_CACHE: dict[str, tuple[tuple[Any, ...], DirectoryIndex]] = {}


def directory_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever an import or an admin update touches the directory."""
    services = session.execute(select(func.count(), func.max(m.Service.updated_at))).one()
    capacity = session.execute(
        select(func.count(), func.max(m.ServiceCapacity.updated))).one()
    return (*services, *capacity)


def invalidate_directory() -> None:
    """Forget this process's cached directory (other processes see `directory_version`)."""
    _CACHE.clear()


def cached_entries(session: Session, key: str) -> DirectoryIndex:
    """`load_entries`, reused while the directory's version is unchanged (a large directory
    takes far longer to load than to match)."""
    version = directory_version(session)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    index = DirectoryIndex(load_entries(session))
    _CACHE[key] = (version, index)
    return index


# ---------------------------------------------------------------------------- requests

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


def _event(session: Session, referral: m.Referral, status: str, previous: str | None,
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
    _event(session, referral, status, previous, actor, now)


def text_person(session: Session, referral: m.Referral, body: str, purpose: str,
                now: datetime) -> None:
    if referral.contact_ref is None:
        return
    sms = SmsRequestedV1(producer=PRODUCER, contact_ref=referral.contact_ref, body=body,
                         purpose=purpose, requested_at=now)
    session.add(outbox_row(m.OutboxMessage, SMS_REQUESTS, str(referral.contact_ref), sms))


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
    _event(session, referral, "requested", None, actor, now)
    return referral


def find_matches(session: Session, settings: Settings, referral: m.Referral, now: datetime,
                 exclude: tuple[str, ...] = ()) -> list[Match]:
    zone = region_time_zone(referral.region_id, "UTC")
    request = Request(
        service_types=frozenset(referral.service_types), now=now, time_zone=zone,
        origin=centroid(referral.region_id) if referral.region_id else None,
        language=referral.language, payment=referral.payment, age=referral.age,
        within_hours=settings.referrals_open_within_hours,
        max_distance_km=settings.referrals_max_distance_km, limit=3 + len(exclude))
    directory = cached_entries(session, str(session.get_bind().engine.url))
    if exclude:
        return match_entries([e for e in directory.entries if e.service_id not in exclude],
                             request)[:3]
    return match_entries(directory, request)[:3]


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


@dataclass(frozen=True)
class HandOff:
    """A choice made: the provider is to be notified (outside the transaction)."""

    referral_id: uuid.UUID
    service_id: str


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


# ---------------------------------------------------------------------------- hand-off

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


# ---------------------------------------------------------------------------- site keys

STAFF_SCOPE = "referrals"  # a site API key with it may refer people (ingest issues keys)


@dataclass(frozen=True)
class StaffCaller:
    """Who calls the staff API: a site (its API key) or, with `site_id` None, an admin."""

    site_id: uuid.UUID | None
    site_name: str | None = None

    def may_see(self, referral: m.Referral) -> bool:
        return self.site_id is None or referral.site_id == self.site_id


def apply_site_key(session: Session, event: SiteKeyChangedV1) -> m.SiteKey:
    """Keep the replica of ingest's keys: an upsert by key id, so a redelivered event
    changes nothing; an older event never overwrites a newer one, and a revocation is final."""
    row = session.get(m.SiteKey, event.key_id)
    if row is None:
        row = m.SiteKey(key_id=event.key_id, site_id=event.site_id, site_name=event.site_name,
                        key_hash=event.key_hash, scopes=list(event.scopes),
                        created_at=event.created_at, updated_at=event.occurred_at)
        session.add(row)
    elif event.occurred_at >= row.updated_at:
        row.site_name, row.scopes = event.site_name, list(event.scopes)
        row.updated_at = event.occurred_at
    if row.revoked_at is None and event.revoked_at is not None:
        row.revoked_at = event.revoked_at
    session.flush()
    return row


def staff_caller(session: Session, settings: Settings, token: str) -> StaffCaller:
    """The admin token, or a site key (from the replica) that has the referrals scope."""
    if hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return StaffCaller(site_id=None)
    row = session.scalars(select(m.SiteKey).where(
        m.SiteKey.key_hash == hash_api_key(token))).first()
    if row is None or row.revoked_at is not None:
        raise ProblemError(401, "Unauthorized", "Unknown or revoked API key.",
                           headers={"WWW-Authenticate": "Bearer"})
    if STAFF_SCOPE not in row.scopes:
        raise ProblemError(403, "Forbidden", f"This API key lacks the {STAFF_SCOPE!r} scope.")
    return StaffCaller(site_id=row.site_id, site_name=row.site_name)


# ---------------------------------------------------------------------------- time

def tick(session: Session, settings: Settings, now: datetime) -> dict[str, int]:
    """Due work: follow-ups after the delay, no_response after silence."""
    done = {"followups": 0, "no_response": 0}
    due = now - timedelta(seconds=settings.referrals_followup_delay_seconds)
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "provider_notified", m.Referral.followup_sent_at.is_(None),
            m.Referral.notified_at <= due, m.Referral.contact_ref.is_not(None))):
        referral.followup_sent_at = now
        referral.awaiting = "followup"
        text_person(session, referral, texts.followup_text(referral.language),
                    "referral_followup", now)
        done["followups"] += 1
    silent = now - timedelta(seconds=settings.referrals_no_response_seconds)
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "options_sent", m.Referral.awaiting == "choice",
            m.Referral.options_sent_at <= silent)):
        set_status(session, referral, "no_response", "system", now)
        done["no_response"] += 1
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "provider_notified", m.Referral.followup_sent_at <= silent)):
        set_status(session, referral, "no_response", "system", now)
        done["no_response"] += 1
    return done


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


def purge(session: Session, settings: Settings, now: datetime) -> int:
    """Remove personal data of referrals past their retention; statuses and counts stay."""
    expired = select(m.Consent.referral_id).where(m.Consent.retain_until <= now)
    count = 0
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.purged_at.is_(None), m.Referral.id.in_(expired))):
        if referral.status in OPEN:
            set_status(session, referral, "no_response", "system", now, check=False)
        referral.contact_ref = None
        referral.text = None
        referral.callback_phone_encrypted = None
        referral.awaiting = None
        referral.purged_at = now
        for notice in session.scalars(select(m.ProviderNotice).where(
                m.ProviderNotice.referral_id == referral.id)):
            notice.payload = None
        count += 1
    return count


def stats(session: Session) -> dict[str, Any]:
    """Aggregates for the dashboard (no personal data)."""
    by_status = dict(session.execute(
        select(m.Referral.status, func.count()).group_by(m.Referral.status)).all())
    by_source = dict(session.execute(
        select(m.Referral.source, func.count()).group_by(m.Referral.source)).all())
    return {"total": sum(by_status.values()), "by_status": by_status, "by_source": by_source}
