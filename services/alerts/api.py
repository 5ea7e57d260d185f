"""The alerts HTTP API: Twilio's webhooks (inbound SMS, status callbacks), the alert
lifecycle for officials, subscribers' data for admins. The signup page and the dev outbox
are in pages.py."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from prometheus_client import Counter
from sqlalchemy.orm import Session
from twilio.twiml.messaging_response import MessagingResponse

from services.alerts import contacts, pages, repository, webhooks
from services.alerts.credentials import SingleUseReviewer
from services.alerts.models import Alert, Subscriber
from services.alerts.schemas import (
    ActionIn,
    AlertDetailOut,
    AlertOut,
    AlertReviewOut,
    AuditEntryOut,
    DeliveryOut,
    EditIn,
    FollowUpIn,
    SubscriberExport,
)
from services.alerts.service.common import MAX_SEGMENTS, segments_of
from services.alerts.service.review import (
    approve,
    cancel,
    edit,
    follow_up,
    get_alert,
    needs_second_reviewer,
    reject,
    review_state,
)
from services.alerts.service.statuses import STATUS_RANK
from shared.officials import Official
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import (
    AdminOnly,
    AppSettings,
    DbSession,
    OfficialAdmin,
    Operator,
    ViewerOrOperator,
    create_app,
)

log = logging.getLogger(__name__)
router = APIRouter()
STATUS_CALLBACKS = Counter("lookout_alerts_sms_status_total", "Twilio status callbacks",
                           ["status"])
STATUS_OUTCOMES = Counter("lookout_alerts_sms_status_outcomes_total",
                          "Status callbacks: applied, stale (the delivery was further), early "
                          "(before the SID was recorded: applied by the worker)", ["outcome"])


@router.get("/v1/deliveries", dependencies=[AdminOnly], tags=["operations"])
def deliveries(
    session: DbSession, evidence_event_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeliveryOut]:
    """Recent deliveries; with `evidence_event_id`, those of alerts built from that event."""
    return [DeliveryOut.model_validate(d, from_attributes=True)
            for d in repository.recent_deliveries(session, limit, evidence_event_id)]


@router.post("/v1/sms/status", tags=["twilio"], include_in_schema=False)
async def sms_status(request: Request, settings: AppSettings,
                     x_twilio_signature: Annotated[str | None, Header()] = None) -> Response:
    """Twilio's status callback, checked against X-Twilio-Signature."""
    form = await webhooks.signed_form(request, settings, "/v1/sms/status", x_twilio_signature)
    status = form.get("MessageStatus", "")
    STATUS_CALLBACKS.labels(status if status in STATUS_RANK else "other").inc()
    outcome = await webhooks.record_status(settings.sqlalchemy_url, form.get("MessageSid", ""),
                                           status, form.get("ErrorCode") or None)
    STATUS_OUTCOMES.labels(outcome).inc()
    return Response(status_code=204)



@router.post("/v1/sms/inbound", tags=["twilio"], include_in_schema=False)
async def sms_inbound(request: Request, settings: AppSettings,
                      x_twilio_signature: Annotated[str | None, Header()] = None) -> Response:
    """Twilio's incoming-message webhook: keywords (JOIN, STOP, HELP, OD, TREATMENT...),
    answered with TwiML."""
    form = await webhooks.signed_form(request, settings, "/v1/sms/inbound", x_twilio_signature)
    try:
        phone = contacts.normalize_phone(form.get("From", ""), strict=False)
    except contacts.InvalidPhoneError as exc:
        raise ProblemError(422, "Invalid sender", "From is not a phone number.") from exc
    text = await asyncio.to_thread(webhooks.handle_inbound, settings, phone, form.get("Body", ""),
                                   form.get("MessageSid", ""))
    twiml = MessagingResponse()
    if text:
        twiml.message(text)
    return Response(str(twiml), media_type="application/xml")




# ---- the alert lifecycle (officials) --------------------------------------------------------

def _alert_fields(alert: Alert) -> dict[str, Any]:
    texts = alert.texts or {"en": alert.body_en}
    return {
        "id": alert.id, "kind": alert.kind, "parent_id": alert.parent_id,
        "region_id": alert.region_id, "region_name": alert.region_name,
        "substance_id": alert.substance_id, "severity": alert.severity, "status": alert.status,
        "body": alert.body_en, "texts": texts, "segments": segments_of(texts),
        "max_segments": MAX_SEGMENTS, "signal_count": alert.signal_count,
        "created_at": alert.created_at, "approved_at": alert.approved_at,
        "approved_by": alert.approved_by, "expires_at": alert.expires_at,
    }


def _review_fields(session: Session, settings: Settings, alert: Alert) -> dict[str, Any]:
    author, approvals = review_state(session, alert)
    return {"second_reviewer": needs_second_reviewer(settings, alert),
            "text_author": author,
            "first_approvals": approvals if alert.status == "draft" else []}


def _alert_out(session: Session, alert: Alert, settings: Settings) -> AlertReviewOut:
    return AlertReviewOut(**_alert_fields(alert), **_review_fields(session, settings, alert))


def _alert_detail(session: Session, alert: Alert, settings: Settings) -> AlertDetailOut:
    audit = [AuditEntryOut.model_validate(a, from_attributes=True)
             for a in repository.audit_of(session, alert.id)]
    return AlertDetailOut(**_alert_fields(alert), **_review_fields(session, settings, alert),
                          deliveries=repository.delivery_counts(session, alert.id),
                          audit=audit)


def _in_scope(session: Session, alert_id: uuid.UUID, official: Official) -> None:
    """A reviewer acts only on alerts of their regions (403 otherwise)."""
    alert = get_alert(session, alert_id)
    if not official.covers(alert.region_id):
        raise ProblemError(403, "Forbidden",
                           f"{alert.region_id} is outside the regions of {official.name!r} "
                           f"({', '.join(official.regions) or 'none'}).")


@router.get("/v1/alerts", dependencies=[ViewerOrOperator], tags=["alerts"])
def alerts(session: DbSession, status: str | None = None,
           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[AlertOut]:
    """Alerts, newest first; `status=draft` is the review queue."""
    return [AlertOut(**_alert_fields(a)) for a in repository.alerts(session, status, limit)]


@router.get("/v1/alerts/{alert_id}", dependencies=[ViewerOrOperator], tags=["alerts"])
def alert_detail(session: DbSession, settings: AppSettings,
                 alert_id: uuid.UUID) -> AlertDetailOut:
    """One alert with its texts, segments, delivery counts, review state and audit trail."""
    return _alert_detail(session, get_alert(session, alert_id), settings)


@router.post("/v1/alerts/{alert_id}/approve", tags=["alerts"])
def approve_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                  alert_id: uuid.UUID, body: ActionIn | None = None) -> AlertReviewOut:
    """Approve a draft (a reviewer of the alert's region, by the dashboard's signed
    credential). A critical alert under a `second_reviewer` policy needs two reviewers."""
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    alert = approve(session, alert_id, official.name, body.force, settings=settings,
                            reason=body.reason)
    return _alert_out(session, alert, settings)


@router.patch("/v1/alerts/{alert_id}", tags=["alerts"])
def edit_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
               alert_id: uuid.UUID, body: EditIn) -> AlertReviewOut:
    """Edit the text per language (segments re-counted; more than 2 GSM-7 segments is
    refused unless `force`) or the expiry. An approved alert that has not gone out goes
    back to review."""
    _in_scope(session, alert_id, official)
    alert = edit(session, alert_id, official.name, body.texts, body.force,
                         body.expires_at, reason=body.reason)
    return _alert_out(session, alert, settings)


@router.post("/v1/alerts/{alert_id}/reject", tags=["alerts"])
def reject_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: ActionIn | None = None) -> AlertReviewOut:
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    return _alert_out(session, reject(session, alert_id, official.name,
                                              reason=body.reason), settings)


@router.post("/v1/alerts/{alert_id}/cancel", tags=["alerts"])
def cancel_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: ActionIn | None = None) -> AlertReviewOut:
    body = body or ActionIn()
    _in_scope(session, alert_id, official)
    return _alert_out(session, cancel(session, alert_id, official.name,
                                              reason=body.reason), settings)


@router.post("/v1/alerts/{alert_id}/update", tags=["alerts"], status_code=201)
def update_alert(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
                 alert_id: uuid.UUID, body: FollowUpIn | None = None) -> AlertReviewOut:
    """A follow-up alert (a new draft, kind `update`) for the same region."""
    body = body or FollowUpIn()
    _in_scope(session, alert_id, official)
    child = follow_up(session, settings, alert_id, official.name, "update",
                              body.texts, body.force, reason=body.reason)
    return _alert_out(session, child, settings)


@router.post("/v1/alerts/{alert_id}/all-clear", tags=["alerts"], status_code=201)
def all_clear(session: DbSession, settings: AppSettings, official: SingleUseReviewer,
              alert_id: uuid.UUID, body: FollowUpIn | None = None) -> AlertReviewOut:
    """An all-clear (a new draft, kind `all_clear`) for the same region."""
    body = body or FollowUpIn()
    _in_scope(session, alert_id, official)
    child = follow_up(session, settings, alert_id, official.name, "all_clear",
                              body.texts, body.force, reason=body.reason)
    return _alert_out(session, child, settings)


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
                      phone: str) -> SubscriberExport:
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



app = create_app("alerts", title="Lookout alerts",
                 description="Subscribers, alerts, SMS fan-out and Twilio webhooks.")
app.include_router(router)
app.include_router(pages.router)
