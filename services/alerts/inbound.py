"""Inbound SMS: keyword -> state change (+ outbox events) -> the reply text.

`handle_inbound` takes a session and never commits; the webhook's unit of work does, so the
contact's new state and the events it publishes commit together.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from services.alerts import contacts
from services.alerts.keywords import Command, parse, scrub_free_text
from services.alerts.models import InboundMessage, OutboxMessage, Subscriber
from shared.db import utcnow
from shared.events import ContactStoppedV1, OverdoseReportV1, ReferralRequestedV1, SmsReceivedV1
from shared.outbox import outbox_row
from shared.regions import Region, RegionNotFoundError
from shared.settings import Settings
from shared.topics import CONTACT_STOPS, OVERDOSE_REPORTS, REFERRAL_REQUESTS, SMS_INBOUND

PRODUCER = "alerts"
CONVERSATION = timedelta(days=14)
SEEN_FOR = timedelta(days=30)  # how long a MessageSid is remembered
INBOUND = Counter("lookout_alerts_sms_inbound_total", "Inbound SMS by keyword", ["keyword"])
DUPLICATES = Counter("lookout_alerts_sms_inbound_duplicates_total",
                     "Inbound SMS whose MessageSid was handled already (retries, replays)")

REPLIES: dict[str, dict[str, str]] = {
    "confirm_join": {
        "en": "Lookout: reply YES to get drug supply alerts for {areas} (a few a month at most)."
              " Msg&data rates may apply. Reply STOP to cancel, HELP for help.",
        "es": "Lookout: responda YES para recibir alertas de drogas para {areas} (pocas al mes)."
              " Pueden aplicar tarifas de mensajes y datos. Responda STOP para cancelar, HELP"
              " para ayuda.",
        "fr": "Lookout: repondez YES pour recevoir les alertes drogues pour {areas} (quelques-unes"
              " par mois). Des frais de messages et donnees peuvent s'appliquer. Repondez STOP"
              " pour annuler, HELP pour aide.",
    },
    "joined": {
        "en": "Lookout: you will get drug supply alerts for {areas}. Msg&data rates may apply."
              " Reply STOP to cancel, HELP for help.",
        "es": "Lookout: recibira alertas de drogas para {areas}. Pueden aplicar tarifas."
              " Responda STOP para cancelar, HELP para ayuda.",
        "fr": "Lookout: vous recevrez les alertes drogues pour {areas}. Des frais peuvent"
              " s'appliquer. Repondez STOP pour annuler, HELP pour aide.",
    },
    "unknown_area": {
        "en": "Lookout: we don't know the area \"{area}\". Send JOIN and a postal code,"
              " e.g. JOIN 98104.",
        "es": "Lookout: no conocemos la zona \"{area}\". Envie JOIN y un codigo postal,"
              " p.ej. JOIN 98104.",
        "fr": "Lookout: zone \"{area}\" inconnue. Envoyez JOIN et un code postal,"
              " p.ex. JOIN 98104.",
    },
    "need_area": {
        "en": "Lookout: send JOIN and your postal code or area, e.g. JOIN 98104.",
        "es": "Lookout: envie JOIN y su codigo postal o zona, p.ej. JOIN 98104.",
        "fr": "Lookout: envoyez JOIN et votre code postal ou zone, p.ex. JOIN 98104.",
    },
    "stopped": {
        "en": "Lookout: you are unsubscribed and will get no more messages. Reply START to"
              " resubscribe.",
        "es": "Lookout: se ha dado de baja y no recibira mas mensajes. Responda START para"
              " volver.",
        "fr": "Lookout: vous etes desabonne et ne recevrez plus de messages. Repondez START"
              " pour revenir.",
    },
    "started": {
        "en": "Lookout: you are subscribed again to alerts for {areas}. Reply STOP to cancel.",
        "es": "Lookout: vuelve a recibir alertas para {areas}. Responda STOP para cancelar.",
        "fr": "Lookout: vous recevez a nouveau les alertes pour {areas}. Repondez STOP pour"
              " annuler.",
    },
    "started_no_areas": {
        "en": "Lookout: you can get messages again. Send JOIN and a postal code for alerts."
              " Reply STOP to cancel.",
        "es": "Lookout: puede recibir mensajes de nuevo. Envie JOIN y un codigo postal."
              " Responda STOP para cancelar.",
        "fr": "Lookout: vous pouvez a nouveau recevoir des messages. Envoyez JOIN et un code"
              " postal. Repondez STOP pour annuler.",
    },
    "help": {
        "en": "Lookout drug supply alerts. JOIN <postal code>, AREAS, ADD/REMOVE <area>,"
              " LANG EN/ES/FR, OD <postal code> <what happened> to report, TREATMENT for help."
              " Reply STOP to cancel. Msg&data rates may apply.",
        "es": "Alertas Lookout. JOIN <codigo postal>, AREAS, ADD/REMOVE <zona>, LANG EN/ES/FR,"
              " OD <codigo postal> <que paso> para reportar, AYUDA para tratamiento."
              " Responda STOP para cancelar.",
        "fr": "Alertes Lookout. JOIN <code postal>, AREAS, ADD/REMOVE <zone>, LANG EN/ES/FR,"
              " OD <code postal> <ce qui s'est passe> pour signaler, TRAITEMENT pour de l'aide."
              " Repondez STOP pour annuler.",
    },
    "areas": {
        "en": "Lookout: your areas: {areas}. ADD <area> or REMOVE <area> to change.",
        "es": "Lookout: sus zonas: {areas}. ADD <zona> o REMOVE <zona> para cambiar.",
        "fr": "Lookout: vos zones: {areas}. ADD <zone> ou REMOVE <zone> pour changer.",
    },
    "not_joined": {
        "en": "Lookout: you have no alert areas yet. Send JOIN and a postal code.",
        "es": "Lookout: aun no tiene zonas. Envie JOIN y un codigo postal.",
        "fr": "Lookout: vous n'avez pas encore de zone. Envoyez JOIN et un code postal.",
    },
    "removed": {
        "en": "Lookout: removed. Your areas: {areas}.",
        "es": "Lookout: eliminada. Sus zonas: {areas}.",
        "fr": "Lookout: retiree. Vos zones: {areas}.",
    },
    "lang": {
        "en": "Lookout: messages will be in English.",
        "es": "Lookout: los mensajes seran en espanol.",
        "fr": "Lookout: les messages seront en francais.",
    },
    "report_ok": {
        "en": "Lookout: thank you, your report was received anonymously. In an emergency"
              " call 911.",
        "es": "Lookout: gracias, su reporte fue recibido de forma anonima. En una emergencia"
              " llame al 911.",
        "fr": "Lookout: merci, votre signalement a ete recu anonymement. En cas d'urgence"
              " appelez le 911.",
    },
    "report_need_area": {
        "en": "Lookout: to report, send OD <postal code> <what happened>.",
        "es": "Lookout: para reportar, envie OD <codigo postal> <que paso>.",
        "fr": "Lookout: pour signaler, envoyez OD <code postal> <ce qui s'est passe>.",
    },
    "treatment": {
        "en": "Lookout: thank you for reaching out. We will text you options for help soon."
              " In an emergency call 911. Reply STOP to opt out.",
        "es": "Lookout: gracias por escribir. Pronto le enviaremos opciones de ayuda. En una"
              " emergencia llame al 911. Responda STOP para salir.",
        "fr": "Lookout: merci de nous avoir ecrit. Nous vous enverrons bientot des options"
              " d'aide. En cas d'urgence appelez le 911. Repondez STOP pour arreter.",
    },
    "opted_out": {
        "en": "Lookout: you opted out. Reply START first, then send your request again.",
        "es": "Lookout: se dio de baja. Responda START y luego envie su pedido de nuevo.",
        "fr": "Lookout: vous etes desabonne. Repondez START puis renvoyez votre demande.",
    },
}
NO_AREAS = {"en": "none", "es": "ninguna", "fr": "aucune"}


def reply(key: str, language: str, **values: str) -> str:
    texts = REPLIES[key]
    return texts.get(language, texts["en"]).format(**values)


def _area_names(session: Session, contact: Subscriber) -> str:
    names = [contacts.region_name(r) for r in contacts.areas_of(session, contact)]
    return ", ".join(names) if names else NO_AREAS.get(contact.language, "none")


def _resolve(areas: list[str]) -> tuple[list[Region], str | None]:
    regions: list[Region] = []
    for area in areas:
        try:
            regions.append(contacts.resolve_area(area))
        except RegionNotFoundError:
            return regions, area
    return regions, None


def first_delivery(session: Session, sid: str) -> bool:
    """Record `sid` as handled; False if it was already (then nothing is to be done). In the
    caller's transaction: a concurrent delivery of the same SID waits for it on the unique
    key, and a rolled-back one is retried by Twilio."""
    now = utcnow()
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    recorded = session.scalar(insert(InboundMessage).values(sid=sid, received_at=now)
                              .on_conflict_do_nothing().returning(InboundMessage.sid))
    session.execute(delete(InboundMessage).where(InboundMessage.received_at < now - SEEN_FOR))
    if recorded is not None:
        return True
    DUPLICATES.inc()
    return False


def handle_inbound(session: Session, settings: Settings, phone: str, body: str) -> str:
    """Apply one inbound message from `phone` (E.164); return the reply ('' for none)."""
    command = parse(body)
    INBOUND.labels(command.kind).inc()
    contact = contacts.find(session, settings, phone)
    language = contact.language if contact is not None else (command.language or "en")
    now = utcnow()

    if command.kind == "stop":
        if contact is None:
            contact, _ = contacts.get_or_create(session, settings, phone, status="stopped",
                                                language=language)
            contact.stopped_at = now
            return reply("stopped", language)
        if contact.status == "stopped":
            return ""  # already stopped: one confirmation only
        contact.status, contact.stopped_at = "stopped", now
        contact.conversation_until = None
        # The other services end what they have open for the contact (a referral).
        stopped = ContactStoppedV1(producer=PRODUCER, contact_ref=contact.id, stopped_at=now)
        session.add(outbox_row(OutboxMessage, CONTACT_STOPS, str(contact.id), stopped))
        return reply("stopped", language)

    if command.kind == "start":
        if contact is None or contact.status != "stopped":
            return reply("help", language)
        areas = contacts.areas_of(session, contact)
        contact.stopped_at = None
        if areas and contact.consent_at is not None:
            contact.status = "active"
            return reply("started", language, areas=_area_names(session, contact))
        contact.status = "contact"
        return reply("started_no_areas", language)

    if command.kind == "help":
        return reply("help", language)

    if command.kind == "join":
        return _join(session, settings, phone, contact, command, language)

    if command.kind == "yes" and contact is not None and contact.status == "pending":
        return _confirm(session, contact, "sms", reply("confirm_join", contact.language,
                                                       areas=_area_names(session, contact)))

    if command.kind in ("areas", "add", "remove"):
        if contact is None or contact.status not in ("pending", "active"):
            return reply("not_joined", language)
        if command.kind == "areas":
            return reply("areas", language, areas=_area_names(session, contact))
        regions, unknown = _resolve(command.args)
        if unknown is not None:
            return reply("unknown_area", language, area=unknown[:40])
        if command.kind == "add":
            contacts.add_areas(session, contact, regions)
            return reply("areas", language, areas=_area_names(session, contact))
        contacts.remove_areas(session, contact, regions)
        return reply("removed", language, areas=_area_names(session, contact))

    if command.kind == "lang":
        contact, _ = contacts.get_or_create(session, settings, phone, language=language)
        contact.language = command.args[0]
        return reply("lang", contact.language)

    if command.kind == "report":
        return _report(session, contact, command, language)

    if command.kind == "treatment":
        if contact is not None and contact.status in ("stopped", "erased", "invalid"):
            return reply("opted_out", language)
        contact, _ = contacts.get_or_create(session, settings, phone, language=language)
        contact.conversation_until = now + CONVERSATION
        areas = contacts.areas_of(session, contact)
        event = ReferralRequestedV1(
            producer=PRODUCER, requested_at=now, contact_ref=contact.id,
            language=contact.language, region_id=areas[0] if areas else None,
            raw_text=scrub_free_text(body.strip()) or None)
        session.add(outbox_row(OutboxMessage, REFERRAL_REQUESTS, str(contact.id), event))
        return reply("treatment", contact.language)

    # Not a keyword (or YES outside a pending signup): a reply in a referral conversation
    # goes to referrals; anything else gets the short help text.
    if contact is not None and contact.status in contacts.TEXTABLE \
            and contact.conversation_until is not None and contact.conversation_until > now:
        event_in = SmsReceivedV1(producer=PRODUCER, contact_ref=contact.id,
                                 body=scrub_free_text(body.strip(), 1600), received_at=now)
        session.add(outbox_row(OutboxMessage, SMS_INBOUND, str(contact.id), event_in))
        return ""
    if contact is not None and contact.status == "stopped":
        return ""
    return reply("help", language)


def _join(session: Session, settings: Settings, phone: str, contact: Subscriber | None,
          command: Command, language: str) -> str:
    regions, unknown = _resolve(command.args)
    if unknown is not None:
        return reply("unknown_area", language, area=unknown[:40])
    if contact is not None and contact.status == "pending":
        contacts.add_areas(session, contact, regions)
        return _confirm(session, contact, "sms", reply("confirm_join", contact.language,
                                                       areas=_area_names(session, contact)))
    if not regions:
        if contact is not None and contact.status == "active":
            return reply("areas", language, areas=_area_names(session, contact))
        return reply("need_area", language)
    contact, _ = contacts.get_or_create(session, settings, phone, language=language)
    contacts.add_areas(session, contact, regions)
    if contact.status == "active":
        return reply("joined", contact.language, areas=_area_names(session, contact))
    contact.status, contact.stopped_at = "pending", None
    return reply("confirm_join", contact.language, areas=_area_names(session, contact))


def _confirm(session: Session, contact: Subscriber, channel: str, wording: str) -> str:
    """Double opt-in done: active, with the consent record (time, channel, wording shown)."""
    contact.status = "active"
    contact.consent_at = utcnow()
    contact.consent_channel = channel
    contact.consent_text = wording
    contact.code_hash = None
    return reply("joined", contact.language, areas=_area_names(session, contact))


def _report(session: Session, contact: Subscriber | None, command: Command,
            language: str) -> str:
    region: Region | None = None
    if command.args:
        try:
            region = contacts.resolve_area(command.args[0])
        except RegionNotFoundError:
            region = None
    if region is None and contact is not None:
        areas = contacts.areas_of(session, contact)
        if areas:
            region = Region(areas[0], contacts.region_name(areas[0]), "UTC")
    if region is None:
        return reply("report_need_area", language)
    event = OverdoseReportV1(
        producer=PRODUCER, report_id=uuid.uuid4(), source="public_sms", occurred_at=utcnow(),
        region_id=region.id, region_name=region.name,
        note=scrub_free_text(command.text) or None)
    session.add(outbox_row(OutboxMessage, OVERDOSE_REPORTS, region.id, event))
    return reply("report_ok", language)
