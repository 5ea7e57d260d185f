"""The alerts HTTP API: Twilio's webhooks (inbound SMS, status callbacks), the alert
lifecycle for officials, subscribers' data for admins, the signup page and the dev outbox."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from prometheus_client import Counter
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from services.alerts import contacts, inbound, service, signup
from services.alerts.credentials import SingleUseReviewer
from services.alerts.keywords import parse as parse_keyword
from services.alerts.models import (
    Alert,
    AlertAudit,
    AlertSource,
    Delivery,
    DevOutboxMessage,
    Subscriber,
)
from services.alerts.sms import SmsError, make_backend
from shared import csrf
from shared.db import session_scope, utcnow
from shared.officials import Official
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import (
    AdminOnly,
    AppSettings,
    DbSession,
    DevOnly,
    OfficialAdmin,
    Operator,
    ViewerOrOperator,
    create_app,
)

log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
STATUS_CALLBACKS = Counter("lookout_alerts_sms_status_total", "Twilio status callbacks",
                           ["status"])
SIGNUP_CODES = Counter("lookout_alerts_signup_codes_total", "Signup codes texted", ["outcome"])
STATUS_OUTCOMES = Counter("lookout_alerts_sms_status_outcomes_total",
                          "Status callbacks: applied, stale (the delivery was further), early "
                          "(before the SID was recorded: applied by the worker)", ["outcome"])


def _delivery_out(d: Delivery) -> dict[str, Any]:
    return {
        "id": str(d.id), "alert_id": str(d.alert_id), "status": d.status, "body": d.body,
        "segments": d.segments, "backend": d.backend, "provider_sid": d.provider_sid,
        "error_code": d.error_code, "created_at": d.created_at.isoformat(),
        "handed_at": d.handed_at.isoformat() if d.handed_at else None,
    }


@router.get("/v1/deliveries", dependencies=[AdminOnly], tags=["operations"])
def deliveries(
    session: DbSession, evidence_event_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    """Recent deliveries; with `evidence_event_id`, those of alerts built from that event."""
    query = select(Delivery).order_by(Delivery.created_at.desc()).limit(limit)
    if evidence_event_id is not None:
        query = query.where(Delivery.alert_id.in_(
            select(AlertSource.alert_id).where(AlertSource.evidence_event_id == evidence_event_id)
        ))
    return [_delivery_out(d) for d in session.scalars(query)]


@router.post("/v1/sms/status", tags=["twilio"], include_in_schema=False)
async def sms_status(request: Request, settings: AppSettings,
                     x_twilio_signature: Annotated[str | None, Header()] = None) -> Response:
    """Twilio's status callback, checked against X-Twilio-Signature."""
    form = await _signed_form(request, settings, "/v1/sms/status", x_twilio_signature)
    status = form.get("MessageStatus", "")
    STATUS_CALLBACKS.labels(status if status in service.STATUS_RANK else "other").inc()
    outcome = await StatusWriter.of(settings.sqlalchemy_url).record(
        form.get("MessageSid", ""), status, form.get("ErrorCode") or None)
    STATUS_OUTCOMES.labels(outcome).inc()
    return Response(status_code=204)


def _record_statuses(url: str, items: list[tuple[str, str, str | None]]) -> list[str]:
    for attempt in (1, 2):
        try:
            with session_scope(url) as session:
                return [service.record_status(session, *item) for item in items]
        except IntegrityError:  # an early row for one SID made at the same time: again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class StatusWriter:
    """Group commit for status callbacks: a callback is answered only once its status is
    committed (nothing answered is lost), but the callbacks that arrive while one batch is
    written (in a thread: the event loop keeps taking callbacks) share the next transaction.
    Under a fan-out's flood of callbacks this is one thread hop and one commit per batch
    instead of per callback."""

    MAX_BATCH = 200
    _writers: dict[str, StatusWriter] = {}

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.loop = loop
        self.waiting: list[tuple[tuple[str, str, str | None], asyncio.Future[str]]] = []
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, url: str) -> StatusWriter:
        loop = asyncio.get_running_loop()
        writer = cls._writers.get(url)
        if writer is None or writer.loop is not loop:  # e.g. a new test client's loop
            writer = cls._writers[url] = StatusWriter(url, loop)
        return writer

    async def record(self, sid: str, status: str, error_code: str | None) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.append(((sid, status, error_code), future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.waiting:
            batch = self.waiting[:self.MAX_BATCH]
            del self.waiting[:self.MAX_BATCH]
            try:
                outcomes = await asyncio.to_thread(_record_statuses, self.url,
                                                   [item for item, _f in batch])
            except Exception as exc:
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_item, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)


@router.post("/v1/sms/inbound", tags=["twilio"], include_in_schema=False)
async def sms_inbound(request: Request, settings: AppSettings,
                      x_twilio_signature: Annotated[str | None, Header()] = None) -> Response:
    """Twilio's incoming-message webhook: keywords (JOIN, STOP, HELP, OD, TREATMENT...),
    answered with TwiML."""
    form = await _signed_form(request, settings, "/v1/sms/inbound", x_twilio_signature)
    try:
        phone = contacts.normalize_phone(form.get("From", ""), strict=False)
    except contacts.InvalidPhoneError as exc:
        raise ProblemError(422, "Invalid sender", "From is not a phone number.") from exc
    text = await asyncio.to_thread(_handle_inbound, settings, phone, form.get("Body", ""),
                                   form.get("MessageSid", ""))
    twiml = MessagingResponse()
    if text:
        twiml.message(text)
    return Response(str(twiml), media_type="application/xml")


def _handle_inbound(settings: Settings, phone: str, body: str, sid: str) -> str:
    # Its own unit of work so that the reply is only sent for a committed change; a
    # MessageSid handled already (a retry, a replay) changes nothing and gets no reply.
    with session_scope(settings.sqlalchemy_url) as session:
        if sid and not inbound.first_delivery(session, sid):
            return ""
        reply = inbound.handle_inbound(session, settings, phone, body)
    if parse_keyword(body).kind == "stop":
        _wait_for_sends_in_flight(settings, phone)
    return reply


def _wait_for_sends_in_flight(settings: Settings, phone: str, within: float = 5.0) -> None:
    """A message claimed just before the STOP committed may still be on its way to the
    provider: answer the STOP only once it has gone, so that nothing is sent after the STOP
    is acknowledged (new claims already see `stopped`)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with session_scope(settings.sqlalchemy_url) as session:
            contact = contacts.find(session, settings, phone)
            if contact is None or not session.scalar(select(func.count()).select_from(
                    Delivery).where(Delivery.subscriber_id == contact.id,
                                    Delivery.status == "sending")):
                return
        time.sleep(0.05)


async def _signed_form(request: Request, settings: Settings, path: str,
                       signature: str | None) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not settings.twilio_skip_signature_check:
        # Checked against the public URL Twilio was given, never one built from the Host
        # header (settings refuse an empty one outside dev and test).
        if settings.public_alerts_url:
            url = settings.public_alerts_url.rstrip("/") + path
        elif settings.env in ("dev", "test"):
            url = str(request.url)
        else:
            raise ProblemError(403, "Forbidden", "No public URL to check signatures against.")
        validator = RequestValidator(settings.twilio_auth_token)
        if not signature or not validator.validate(url, form, signature):
            raise ProblemError(403, "Forbidden", "Missing or invalid Twilio signature.")
    return form


# ---- the alert lifecycle (officials) --------------------------------------------------------

def _alert_out(session: Session, alert: Alert, with_audit: bool = False,
               settings: Settings | None = None) -> dict[str, Any]:
    texts = alert.texts or {"en": alert.body_en}
    out: dict[str, Any] = {
        "id": str(alert.id), "kind": alert.kind,
        "parent_id": str(alert.parent_id) if alert.parent_id else None,
        "region_id": alert.region_id, "region_name": alert.region_name,
        "substance_id": alert.substance_id, "severity": alert.severity, "status": alert.status,
        "body": alert.body_en, "texts": texts, "segments": service.segments_of(texts),
        "max_segments": service.MAX_SEGMENTS, "signal_count": alert.signal_count,
        "created_at": alert.created_at.isoformat(),
        "approved_at": alert.approved_at.isoformat() if alert.approved_at else None,
        "approved_by": alert.approved_by,
        "expires_at": alert.expires_at.isoformat() if alert.expires_at else None,
    }
    if settings is not None:
        author, approvals = service.review_state(session, alert)
        out["second_reviewer"] = service.needs_second_reviewer(settings, alert)
        out["text_author"] = author
        out["first_approvals"] = approvals if alert.status == "draft" else []
    if with_audit:
        counts = session.execute(select(Delivery.status, func.count())
                                 .where(Delivery.alert_id == alert.id)
                                 .group_by(Delivery.status)).all()
        out["deliveries"] = {status: n for status, n in counts}
        out["audit"] = [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                         "before": a.before, "after": a.after}
                        for a in session.scalars(select(AlertAudit)
                                                 .where(AlertAudit.alert_id == alert.id)
                                                 .order_by(AlertAudit.id))]
    return out


class ActionIn(BaseModel):
    """A review action. Who acts is the official of the signed credential (never a field
    or header of the request); `reason` is kept in the audit."""

    force: bool = False
    reason: str | None = Field(default=None, max_length=1000)


class EditIn(ActionIn):
    texts: dict[str, str] = Field(default_factory=dict)
    expires_at: AwareDatetime | None = None


class FollowUpIn(ActionIn):
    texts: dict[str, str] | None = None


def _in_scope(session: Session, alert_id: uuid.UUID, official: Official) -> None:
    """A reviewer acts only on alerts of their regions (403 otherwise)."""
    alert = service.get_alert(session, alert_id)
    if not official.covers(alert.region_id):
        raise ProblemError(403, "Forbidden",
                           f"{alert.region_id} is outside the regions of {official.name!r} "
                           f"({', '.join(official.regions) or 'none'}).")


@router.get("/v1/alerts", dependencies=[ViewerOrOperator], tags=["alerts"])
def alerts(session: DbSession, status: str | None = None,
           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """Alerts, newest first; `status=draft` is the review queue."""
    query = select(Alert).order_by(Alert.created_at.desc()).limit(limit)
    if status:
        query = query.where(Alert.status == status)
    return [_alert_out(session, a) for a in session.scalars(query)]


@router.get("/v1/alerts/{alert_id}", dependencies=[ViewerOrOperator], tags=["alerts"])
def alert_detail(session: DbSession, settings: AppSettings,
                 alert_id: uuid.UUID) -> dict[str, Any]:
    """One alert with its texts, segments, delivery counts, review state and audit trail."""
    return _alert_out(session, service.get_alert(session, alert_id), with_audit=True,
                      settings=settings)


@router.post("/v1/alerts/{alert_id}/approve", tags=["alerts"])
def approve_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                  alert_id: uuid.UUID, body: ActionIn | None = None) -> dict[str, Any]:
    """Approve a draft (a reviewer of the alert's region, by the dashboard's signed
    credential). A critical alert under a `second_reviewer` policy needs two reviewers."""
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    alert = service.approve(session, alert_id, official.name, body.force, settings=settings,
                            reason=body.reason)
    return _alert_out(session, alert, settings=settings)


@router.patch("/v1/alerts/{alert_id}", tags=["alerts"])
def edit_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
               alert_id: uuid.UUID, body: EditIn) -> dict[str, Any]:
    """Edit the text per language (segments re-counted; more than 2 GSM-7 segments is
    refused unless `force`) or the expiry. An approved alert that has not gone out goes
    back to review."""
    _in_scope(session, alert_id, official)
    alert = service.edit(session, alert_id, official.name, body.texts, body.force,
                         body.expires_at, reason=body.reason)
    return _alert_out(session, alert, settings=settings)


@router.post("/v1/alerts/{alert_id}/reject", tags=["alerts"])
def reject_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: ActionIn | None = None) -> dict[str, Any]:
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    return _alert_out(session, service.reject(session, alert_id, official.name,
                                              reason=body.reason), settings=settings)


@router.post("/v1/alerts/{alert_id}/cancel", tags=["alerts"])
def cancel_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: ActionIn | None = None) -> dict[str, Any]:
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    return _alert_out(session, service.cancel(session, alert_id, official.name,
                                              reason=body.reason), settings=settings)


@router.post("/v1/alerts/{alert_id}/update", tags=["alerts"], status_code=201)
def update_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: FollowUpIn | None = None) -> dict[str, Any]:
    """A follow-up alert (a new draft, kind `update`) for the same region."""
    body = body or FollowUpIn()
    _in_scope(session, alert_id, official)
    child = service.follow_up(session, settings, alert_id, official.name, "update",
                              body.texts, body.force, reason=body.reason)
    return _alert_out(session, child, settings=settings)


@router.post("/v1/alerts/{alert_id}/all-clear", tags=["alerts"], status_code=201)
def all_clear(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
              alert_id: uuid.UUID, body: FollowUpIn | None = None) -> dict[str, Any]:
    """An all-clear (a new draft, kind `all_clear`) for the same region."""
    body = body or FollowUpIn()
    _in_scope(session, alert_id, official)
    child = service.follow_up(session, settings, alert_id, official.name, "all_clear",
                              body.texts, body.force, reason=body.reason)
    return _alert_out(session, child, settings=settings)


# ---- subscribers' data (admin) --------------------------------------------------------------

def _contact_by_phone(session: Session, settings: Settings, phone: str) -> Subscriber:
    try:
        e164 = contacts.normalize_phone(phone, strict=False)
    except contacts.InvalidPhoneError as exc:
        raise ProblemError(422, "Invalid phone number", "Not a phone number.") from exc
    contact = contacts.find(session, settings, e164)
    if contact is None:
        raise ProblemError(404, "Not found", "No subscriber with that number.")
    return contact


@router.get("/v1/admin/subscribers/export", tags=["admin"])
def export_subscriber(session: DbSession, settings: AppSettings, official: OfficialAdmin,
                      phone: str) -> dict[str, Any]:
    """Everything held about one subscriber (the only place a number is shown, decrypted):
    an admin action of a named official (the dashboard's signed credential), logged here and
    in the dashboard's audit log."""
    contact = _contact_by_phone(session, settings, phone)
    log.info("subscriber %s exported by official %s (%s)", contact.id, official.name,
             official.id)
    return contacts.export(session, settings, contact)


@router.delete("/v1/admin/subscribers", tags=["admin"], status_code=204)
def erase_subscriber(session: DbSession, settings: AppSettings, operator: Operator,
                     phone: str) -> Response:
    """Erase one subscriber's personal data (number, areas, consent wording); logged with
    the operator who did it."""
    contact = _contact_by_phone(session, settings, phone)
    contacts.erase(session, contact)
    log.info("subscriber %s erased by %s", contact.id, operator)
    return Response(status_code=204)


# ---- web signup (double opt-in) -------------------------------------------------------------

CODE_SENT = ("If this number can get texts from us, we have sent it a 6-digit code. Enter it"
             " to confirm.")


def _signup_page(request: Request, settings: Settings, status_code: int = 200,
                 **context: Any) -> HTMLResponse:
    lang = context.get("language", "en")
    token = csrf.token_for(request, settings.secret_key)
    response = templates.TemplateResponse(
        request, "signup.html",
        {"consent": signup.CONSENT_WORDING, "language": lang, "error": None, "step": "start",
         "csrf_token": token, "code_sent": CODE_SENT, **context}, status_code=status_code)
    csrf.set_cookie(response, token, secure=settings.env == "prod")
    return response


def _form_expired(request: Request, settings: Settings, language: str) -> HTMLResponse:
    return _signup_page(request, settings, 403, language=language,
                        error="This form has expired; please fill it in again.")


@router.get("/signup", response_class=HTMLResponse, tags=["signup"])
def signup_page(request: Request, settings: AppSettings, language: str = "en") -> HTMLResponse:
    return _signup_page(request, settings,
                        language=language if language in signup.CONSENT_WORDING else "en")


@router.post("/signup", response_class=HTMLResponse, tags=["signup"])
async def signup_start(request: Request, settings: AppSettings,
                       phone: Annotated[str, Form()], area: Annotated[str, Form()],
                       language: Annotated[str, Form()] = "en",
                       consent: Annotated[str | None, Form()] = None,
                       csrf_token: Annotated[str | None, Form()] = None) -> HTMLResponse:
    """Texts a code (double opt-in). The answer is the same whether or not the number is
    known, subscribed or stopped (a stopped number is not texted)."""
    language = language if language in signup.CONSENT_WORDING else "en"
    if not csrf.is_valid(request, settings.secret_key, csrf_token):
        return _form_expired(request, settings, language)
    client = request.client.host if request.client else ""
    try:
        code = await asyncio.to_thread(_signup_start, settings, client, phone, area, language,
                                       consent is not None)
    except ProblemError as exc:
        return _signup_page(request, settings, exc.status, language=language,
                            error=exc.detail, area=area)
    if code.send:
        sms = make_backend(settings)
        try:
            await sms.send(code.phone, code.body)
            SIGNUP_CODES.labels("sent").inc()
        except SmsError:  # answered like any other: the page must not tell numbers apart
            SIGNUP_CODES.labels("failed").inc()
        finally:
            await sms.close()
    else:
        SIGNUP_CODES.labels("not_texted").inc()
    return _signup_page(request, settings, step="code", signup_id=str(code.signup_id),
                        language=language)


def _signup_start(settings: Settings, client: str, phone: str, area: str, language: str,
                  consent: bool) -> signup.CodeToSend:
    # Committed before the code is texted: the code the person gets is the one stored.
    with session_scope(settings.sqlalchemy_url) as session:
        return signup.start(session, settings, client, phone, area, language, consent,
                            utcnow())


@router.post("/signup/confirm", response_class=HTMLResponse, tags=["signup"])
async def signup_confirm(request: Request, settings: AppSettings,
                         signup_id: Annotated[uuid.UUID, Form()],
                         code: Annotated[str, Form()],
                         language: Annotated[str, Form()] = "en",
                         csrf_token: Annotated[str | None, Form()] = None) -> HTMLResponse:
    language = language if language in signup.CONSENT_WORDING else "en"
    if not csrf.is_valid(request, settings.secret_key, csrf_token):
        return _form_expired(request, settings, language)
    try:
        confirmed, left = await asyncio.to_thread(_signup_confirm, settings, signup_id, code)
    except ProblemError as exc:
        return _signup_page(request, settings, exc.status, step="start", language=language,
                            error=exc.detail)
    if not confirmed:
        return _signup_page(request, settings, 422, step="code", signup_id=str(signup_id),
                            language=language,
                            error=f"That code is not right; {left} attempt(s) left."
                            if left > 0 else "Too many wrong codes; start again.")
    return _signup_page(request, settings, step="done", language=language)


def _signup_confirm(settings: Settings, signup_id: uuid.UUID, code: str) -> tuple[bool, int]:
    # Its own unit of work: the attempt is committed whether the code is right or wrong.
    with session_scope(settings.sqlalchemy_url) as session:
        contact, left = signup.confirm(session, settings, signup_id, code, utcnow())
        return contact is not None, left


@router.get("/dev/outbox.json", dependencies=[DevOnly], tags=["dev"], include_in_schema=False)
def outbox_json(session: DbSession,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    rows = session.scalars(select(DevOutboxMessage).order_by(DevOutboxMessage.id.desc())
                           .limit(limit))
    return [{"sid": m.sid, "to": m.to_masked, "body": m.body, "segments": m.segments,
             "created_at": m.created_at.isoformat()} for m in rows]


@router.get("/dev/outbox", response_class=HTMLResponse, dependencies=[DevOnly], tags=["dev"],
            include_in_schema=False)
def outbox_page(request: Request, session: DbSession) -> HTMLResponse:
    rows = list(session.scalars(select(DevOutboxMessage).order_by(DevOutboxMessage.id.desc())
                                .limit(100)))
    return templates.TemplateResponse(request, "outbox.html", {"messages": rows})


app = create_app("alerts", title="Lookout alerts",
                 description="Subscribers, alerts, SMS fan-out and Twilio webhooks.")
app.include_router(router)
