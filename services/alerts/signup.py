"""Web signup with double opt-in: phone + area + language + consent -> a signup request and a
6-digit code by SMS -> the code confirms it (the contact active with that area and language,
consent recorded). Nothing about the contact changes before the code confirms, a stopped
number is never texted, and the answer is the same whether or not the number is known.
Against SMS pumping: only numbers of the countries served, of mobile ranges, and caps on
codes per client and in all per hour. Functions take a session and never commit."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.alerts import contacts
from services.alerts.inbound import _confirm
from services.alerts.models import RateWindow, SignupRequest, Subscriber
from shared.crypto import encrypt_phone, phone_lookup_hash
from shared.problems import ProblemError
from shared.ratelimit import client_key, take_in_window
from shared.regions import RegionNotFoundError, get_region
from shared.settings import Settings

CONSENT_WORDING = {
    "en": "I agree to receive Lookout drug supply alerts by SMS for the area I chose, a few a"
          " month at most. Message and data rates may apply. Reply STOP to cancel, HELP for"
          " help. Consent is not a condition of any service.",
    "es": "Acepto recibir alertas de Lookout sobre drogas por SMS para la zona elegida, pocas"
          " al mes. Pueden aplicar tarifas de mensajes y datos. Responda STOP para cancelar,"
          " HELP para ayuda. El consentimiento no es condicion de ningun servicio.",
    "fr": "J'accepte de recevoir par SMS les alertes drogues de Lookout pour la zone choisie,"
          " quelques-unes par mois. Des frais de messages et donnees peuvent s'appliquer."
          " Repondez STOP pour annuler, HELP pour aide. Le consentement n'est une condition"
          " d'aucun service.",
}
CODE_TEXT = {
    "en": "Lookout: your code is {code}. Enter it on the signup page to confirm. If you did"
          " not ask for it, ignore this message.",
    "es": "Lookout: su codigo es {code}. Escribalo en la pagina para confirmar. Si no lo"
          " pidio, ignore este mensaje.",
    "fr": "Lookout: votre code est {code}. Saisissez-le sur la page pour confirmer. Si vous"
          " ne l'avez pas demande, ignorez ce message.",
}
RESEND_AFTER = timedelta(seconds=60)
HOUR = timedelta(hours=1)
KEEP_REQUESTS = timedelta(days=1)
# Contacts that must not be texted a code (a stopped number texts START to come back).
NOT_TEXTED = {"stopped", "invalid", "erased"}
log = logging.getLogger(__name__)
REFUSED = Counter("lookout_alerts_signup_refused_total",
                  "Signups refused against SMS pumping: a country not served, a number type "
                  "that cannot get a code, a per-client or global cap on codes per hour",
                  ["reason"])


@dataclass(frozen=True)
class CodeToSend:
    signup_id: uuid.UUID
    phone: str
    body: str
    send: bool  # False: a number we must not text (stopped); the page answers the same


def _code_hash(settings: Settings, signup_id: uuid.UUID, code: str) -> str:
    key = hashlib.sha256(b"lookout:signup-code:" + settings.secret_key.encode()).digest()
    return hmac.new(key, f"{signup_id}:{code}".encode(), hashlib.sha256).hexdigest()


def _cap(session: Session, key: str, limit: int, reason: str, now: datetime) -> None:
    if take_in_window(session, RateWindow, key, limit, HOUR, now):
        return
    REFUSED.labels(reason).inc()
    log.warning("signup refused: %s of %d codes an hour reached", reason, limit,
                extra={"fields": {"cap": reason, "limit": limit, "key": key[-12:]}})
    raise ProblemError(429, "Too many requests",
                       "Too many signups right now; try again in an hour.",
                       headers={"Retry-After": "3600"})


def start(session: Session, settings: Settings, client: str, phone_raw: str, area: str,
          language: str, consent: bool, now: datetime) -> CodeToSend:
    """A signup request with a fresh code; returns the code SMS (`send` False for a number
    that must not be texted: the caller answers the same and texts nothing)."""
    if not consent:
        raise ProblemError(422, "Consent required", "Tick the consent box to subscribe.")
    if language not in CONSENT_WORDING:
        raise ProblemError(422, "Unknown language", "Language must be en, es or fr.")
    try:
        phone = contacts.normalize_phone(phone_raw)
    except contacts.InvalidPhoneError as exc:
        raise ProblemError(422, "Invalid phone number",
                           "Give a mobile number with its area code.") from exc
    refused = contacts.served_number(phone, settings.signup_countries)
    if refused is not None:
        REFUSED.labels(refused).inc()
        raise ProblemError(422, "Number not served",
                           "We can only text mobile numbers in the areas we serve.")
    try:
        region = contacts.resolve_area(area)
    except RegionNotFoundError as exc:
        raise ProblemError(422, "Unknown area", "Give a postal code we know.") from exc
    phone_hash = phone_lookup_hash(settings.secret_key, phone)
    if session.scalar(select(SignupRequest.id).where(
            SignupRequest.phone_hash == phone_hash,
            SignupRequest.created_at > now - RESEND_AFTER).limit(1)) is not None:
        raise ProblemError(429, "Too many requests", "A code was just sent; wait a minute.",
                           headers={"Retry-After": "60"})
    _cap(session, "signup:client:" + client_key(settings.secret_key, client),
         settings.signup_codes_per_client_per_hour, "client_cap", now)
    _cap(session, "signup:all", settings.signup_codes_per_hour, "global_cap", now)
    contact = contacts.find(session, settings, phone)
    request = SignupRequest(
        id=uuid.uuid4(), phone_hash=phone_hash,
        phone_encrypted=encrypt_phone(settings.secret_key, phone), region_id=region.id,
        language=language, attempts=0, created_at=now,
        expires_at=now + timedelta(minutes=settings.signup_code_ttl_minutes))
    code = f"{secrets.randbelow(1_000_000):06d}"
    request.code_hash = _code_hash(settings, request.id, code)
    session.add(request)
    # Requests a day past their creation are of no use (codes live minutes): dropped.
    session.execute(delete(SignupRequest).where(SignupRequest.created_at < now - KEEP_REQUESTS))
    return CodeToSend(request.id, phone, CODE_TEXT[language].format(code=code),
                      send=contact is None or contact.status not in NOT_TEXTED)


def confirm(session: Session, settings: Settings, signup_id: uuid.UUID, code: str,
            now: datetime) -> tuple[Subscriber | None, int]:
    """The code confirms the signup: (the contact, 0), now active with the area and language
    asked for; a wrong code: (None, attempts left), and the last wrong attempt burns the
    code. Each attempt is counted by one conditional UPDATE before the code is compared, so
    parallel guesses are evaluated at most `signup_code_max_attempts` times in all. The
    caller commits either way."""
    limit = settings.signup_code_max_attempts
    counted = session.execute(
        update(SignupRequest).where(SignupRequest.id == signup_id,
                                    SignupRequest.code_hash.is_not(None),
                                    SignupRequest.attempts < limit,
                                    SignupRequest.expires_at > now)
        .values(attempts=SignupRequest.attempts + 1)
        .execution_options(synchronize_session=False))
    request = session.get(SignupRequest, signup_id, populate_existing=True)
    if not getattr(counted, "rowcount", 0):
        if request is None:
            raise ProblemError(404, "Not found", "No signup waits for a code here; start again.")
        if request.code_hash is not None and request.expires_at <= now:
            raise ProblemError(410, "Code expired", "The code has expired; start again.")
        raise ProblemError(429, "Too many attempts", "Too many wrong codes; start again.")
    assert request is not None and request.code_hash is not None
    left = limit - request.attempts
    contact = session.scalar(select(Subscriber).where(
        Subscriber.phone_hash == request.phone_hash))
    right = hmac.compare_digest(request.code_hash,
                                _code_hash(settings, request.id, code.strip()))
    if not right or (contact is not None and contact.status in NOT_TEXTED):
        if left <= 0:
            request.code_hash = None
        return None, left
    if contact is None:
        contact = Subscriber(phone_encrypted=request.phone_encrypted,
                             phone_hash=request.phone_hash, status="pending",
                             language=request.language, created_at=now)
        session.add(contact)
        session.flush()
    contacts.add_areas(session, contact, [get_region(request.region_id)])
    contact.language = request.language
    request.code_hash = None
    _confirm(session, contact, "web", CONSENT_WORDING.get(contact.language,
                                                          CONSENT_WORDING["en"]))
    return contact, 0
