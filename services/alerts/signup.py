"""Web signup with double opt-in: phone + area + language + consent -> a pending contact and
a 6-digit code by SMS -> the code confirms (active, consent recorded). Functions take a
session and never commit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from services.alerts import contacts
from services.alerts.inbound import _confirm
from services.alerts.models import Subscriber
from shared.db import utcnow
from shared.problems import ProblemError
from shared.regions import RegionNotFoundError
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


@dataclass(frozen=True)
class CodeToSend:
    signup_id: uuid.UUID
    phone: str
    body: str


def _code_hash(settings: Settings, signup_id: uuid.UUID, code: str) -> str:
    key = hashlib.sha256(b"lookout:signup-code:" + settings.secret_key.encode()).digest()
    return hmac.new(key, f"{signup_id}:{code}".encode(), hashlib.sha256).hexdigest()


def start(session: Session, settings: Settings, phone_raw: str, area: str, language: str,
          consent: bool) -> CodeToSend | None:
    """A pending contact with a fresh code; returns the code SMS to send (None when the
    number is already subscribed to that area: nothing to confirm)."""
    if not consent:
        raise ProblemError(422, "Consent required", "Tick the consent box to subscribe.")
    if language not in CONSENT_WORDING:
        raise ProblemError(422, "Unknown language", "Language must be en, es or fr.")
    try:
        phone = contacts.normalize_phone(phone_raw)
    except contacts.InvalidPhoneError as exc:
        raise ProblemError(422, "Invalid phone number",
                           "Give a mobile number with its area code.") from exc
    try:
        region = contacts.resolve_area(area)
    except RegionNotFoundError as exc:
        raise ProblemError(422, "Unknown area", "Give a postal code we know.") from exc
    contact, _ = contacts.get_or_create(session, settings, phone, language=language)
    if contact.status == "invalid":
        raise ProblemError(422, "Invalid phone number", "That number cannot receive SMS.")
    now = utcnow()
    if contact.code_expires_at is not None and contact.status == "pending" and \
            contact.code_expires_at - timedelta(minutes=settings.signup_code_ttl_minutes) \
            + RESEND_AFTER > now:
        raise ProblemError(429, "Too many requests", "A code was just sent; wait a minute.",
                           headers={"Retry-After": "60"})
    contacts.add_areas(session, contact, [region])
    contact.language = language
    if contact.status == "active":
        return None
    contact.status, contact.stopped_at = "pending", None
    code = f"{secrets.randbelow(1_000_000):06d}"
    contact.code_hash = _code_hash(settings, contact.id, code)
    contact.code_expires_at = now + timedelta(minutes=settings.signup_code_ttl_minutes)
    contact.code_attempts = 0
    return CodeToSend(contact.id, phone, CODE_TEXT[language].format(code=code))


def confirm(session: Session, settings: Settings, signup_id: uuid.UUID,
            code: str) -> tuple[Subscriber | None, int]:
    """The code confirms the signup: (the contact, 0); a wrong code: (None, attempts left),
    and a few wrong attempts burn the code. The caller commits either way."""
    contact = session.get(Subscriber, signup_id)
    if contact is None or contact.status != "pending" or contact.code_hash is None:
        raise ProblemError(404, "Not found", "No signup waits for a code here; start again.")
    if contact.code_attempts >= settings.signup_code_max_attempts:
        raise ProblemError(429, "Too many attempts", "Too many wrong codes; start again.")
    if contact.code_expires_at is None or contact.code_expires_at < utcnow():
        raise ProblemError(410, "Code expired", "The code has expired; start again.")
    contact.code_attempts += 1
    if not hmac.compare_digest(contact.code_hash,
                               _code_hash(settings, contact.id, code.strip())):
        left = settings.signup_code_max_attempts - contact.code_attempts
        if left <= 0:
            contact.code_hash = None
        return None, left
    _confirm(session, contact, "web", CONSENT_WORDING.get(contact.language,
                                                          CONSENT_WORDING["en"]))
    return contact, 0
