"""The alerts HTTP API: operators' views, the dev outbox and Twilio's status callbacks."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from prometheus_client import Counter
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from services.alerts.models import Alert, AlertSource, Delivery, DevOutboxMessage
from shared.problems import ProblemError
from shared.web import AdminOnly, AppSettings, DbSession, create_app

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
STATUS_CALLBACKS = Counter("lookout_alerts_sms_status_total", "Twilio status callbacks",
                           ["status"])
FINAL_OR_LATER = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3,
                  "failed": 3}


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


@router.get("/v1/alerts", dependencies=[AdminOnly], tags=["alerts"])
def alerts(session: DbSession,
           limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    rows = session.scalars(select(Alert).order_by(Alert.created_at.desc()).limit(limit))
    return [{"id": str(a.id), "region_id": a.region_id, "region_name": a.region_name,
             "substance_id": a.substance_id, "severity": a.severity, "status": a.status,
             "body": a.body_en, "segments": a.segments, "created_at": a.created_at.isoformat()}
            for a in rows]


@router.post("/v1/sms/status", tags=["twilio"], include_in_schema=False)
async def sms_status(
    request: Request, settings: AppSettings, session: DbSession,
    x_twilio_signature: Annotated[str | None, Header()] = None,
) -> Response:
    """Twilio's status callback, checked against X-Twilio-Signature."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not settings.twilio_skip_signature_check:
        url = settings.public_alerts_url.rstrip("/") + "/v1/sms/status" \
            if settings.public_alerts_url else str(request.url)
        validator = RequestValidator(settings.twilio_auth_token)
        if not x_twilio_signature or not validator.validate(url, form, x_twilio_signature):
            raise ProblemError(403, "Forbidden", "Missing or invalid Twilio signature.")
    status = form.get("MessageStatus", "")
    STATUS_CALLBACKS.labels(status if status in FINAL_OR_LATER else "other").inc()
    delivery = session.scalar(select(Delivery).where(Delivery.provider_sid ==
                                                     form.get("MessageSid", "")))
    # Callbacks can arrive out of order: never move a delivery backwards.
    if delivery is not None and FINAL_OR_LATER.get(status, -1) >= FINAL_OR_LATER.get(
            delivery.status, -1):
        delivery.status = status
        delivery.error_code = form.get("ErrorCode") or delivery.error_code
    return Response(status_code=204)


@router.get("/dev/outbox.json", tags=["dev"])
def outbox_json(session: DbSession,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    rows = session.scalars(select(DevOutboxMessage).order_by(DevOutboxMessage.id.desc())
                           .limit(limit))
    return [{"sid": m.sid, "to": m.to_masked, "body": m.body, "segments": m.segments,
             "created_at": m.created_at.isoformat()} for m in rows]


@router.get("/dev/outbox", response_class=HTMLResponse, tags=["dev"])
def outbox_page(request: Request, session: DbSession) -> HTMLResponse:
    rows = list(session.scalars(select(DevOutboxMessage).order_by(DevOutboxMessage.id.desc())
                                .limit(100)))
    return templates.TemplateResponse(request, "outbox.html", {"messages": rows})


app = create_app("alerts", title="Lookout alerts",
                 description="Subscribers, alerts, SMS fan-out and Twilio webhooks.")
app.include_router(router)
