"""The referrals HTTP API: staff referrals (a site API key with the `referrals` scope, or
the admin token), provider updates by API, and the directory's availability and capacity.
The help page and the signed provider link are in pages.py.

The SMS conversation runs in the `referrals-worker` process (`services.referrals.agents`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import pages, repository, service
from services.referrals.notify import ChannelNotifier, NoticeQueue, ProviderNotifier
from services.referrals.schemas import (
    ChoiceIn,
    DevSmsOut,
    OptionOut,
    ReferralOut,
    ReferralStatsOut,
    ServiceOut,
    ServiceUpdateIn,
    StaffReferralIn,
    StatusIn,
)
from shared.crypto import webhook_secret
from shared.db import utcnow
from shared.settings import Settings
from shared.web import (
    AdminOnly,
    AppSettings,
    DbSession,
    DevOnly,
    bearer_token,
    create_app,
    failed_tokens_throttled,
)

router = APIRouter()
NOTICES = NoticeQueue()  # provider notices, sent after the choice is answered


def _staff(request: Request, session: DbSession, settings: AppSettings,
           authorization: Annotated[str | None, Header()] = None) -> service.StaffCaller:
    token = bearer_token(authorization)
    with failed_tokens_throttled(request, settings, "staff token"):  # the admin token too
        return service.staff_caller(session, settings, token)


# Site staff (their site's API key with the `referrals` scope; only their own referrals)
# or an admin (the admin token; every referral).
Staff = Annotated[service.StaffCaller, Depends(_staff)]


def _notifier(request: Request, settings: Settings) -> ProviderNotifier:
    found = getattr(request.app.state, "notifier", None)
    return found if found is not None else ChannelNotifier(settings)


def _notices(request: Request) -> NoticeQueue:
    found = getattr(request.app.state, "notices", None)
    return found if found is not None else NOTICES


def _referral_out(session: Session, referral: m.Referral, full: bool = False) -> ReferralOut:
    history: list[dict[str, Any]] = []
    notices: list[dict[str, Any]] = []
    if full:
        history = [{"status": c.status, "previous_status": c.previous_status, "actor": c.actor,
                    "at": c.at.isoformat()}
                   for c in repository.status_changes(session, referral.id)]
        notices = [{"service_id": n.service_id, "channel": n.channel, "status": n.status,
                    "error": n.error, "at": n.created_at.isoformat()}
                   for n in repository.provider_notices(session, referral.id)]
    return ReferralOut(
        id=referral.id, source=referral.source, status=referral.status,
        service_types=referral.service_types, region_id=referral.region_id,
        language=referral.language, created_at=referral.created_at,
        chosen_service_id=referral.chosen_service_id, site_id=referral.site_id,
        history=history, notices=notices,
        options=[OptionOut(number=i, **{k: o.get(k) for k in (
            "service_id", "name", "address", "phone", "distance_km", "opens_in_minutes",
            "closes_at", "reasons")}) for i, o in enumerate(referral.options or [], start=1)])


@router.post("/v1/referrals", status_code=201, tags=["referrals"])
def staff_referral(body: StaffReferralIn, session: DbSession, settings: AppSettings,
                   caller: Staff) -> ReferralOut:
    """Site staff refer someone on their behalf (`Authorization: Bearer <site API key>` with
    the `referrals` scope; the referral records the site), or an admin (admin token).
    Returns the matched options; choose one with `POST /v1/referrals/{id}/choice`."""
    referral = service.staff_referral(session, settings, body, caller.site_id, utcnow())
    return _referral_out(session, referral)


@router.get("/v1/referrals/stats", dependencies=[AdminOnly], tags=["referrals"])
def referral_stats(session: DbSession) -> ReferralStatsOut:
    """Counts by status and source (no personal data)."""
    return ReferralStatsOut(**service.stats(session))


@router.get("/v1/referrals/{referral_id}", tags=["referrals"])
def get_referral(referral_id: uuid.UUID, session: DbSession, caller: Staff) -> ReferralOut:
    """A referral with its history and notices (a site sees only its own)."""
    referral = service.visible_referral(session, referral_id, caller)
    return _referral_out(session, referral, full=True)


@router.post("/v1/referrals/{referral_id}/choice", tags=["referrals"])
def choose_option(referral_id: uuid.UUID, body: ChoiceIn, request: Request,
                  session: DbSession, settings: AppSettings, caller: Staff) -> ReferralOut:
    """The person (through staff) picks an option: the provider is notified with only what
    was consented."""
    referral = service.visible_referral(session, referral_id, caller)
    now = utcnow()
    handoff = service.choose(session, referral, body.option, "staff", now)
    session.commit()  # the choice stands; the provider is told in the background
    answer = _referral_out(session, referral, full=True)  # before the notice can change it
    _notices(request).submit(service.notify_and_record, settings,
                             _notifier(request, settings), handoff, lambda: utcnow())
    return answer


@router.post("/v1/referrals/{referral_id}/status", tags=["referrals"])
def update_status(referral_id: uuid.UUID, body: StatusIn, session: DbSession,
                  settings: AppSettings, caller: Staff) -> ReferralOut:
    """A provider (admin token) or the referring site's staff reports the outcome."""
    service.visible_referral(session, referral_id, caller)
    referral = service.provider_update(session, settings, referral_id, body.status,
                                       "provider" if caller.site_id is None else "staff",
                                       utcnow())
    return _referral_out(session, referral)


def _service_out(svc: m.Service, settings: Settings,
                 capacity: dict[str, float]) -> ServiceOut:
    return ServiceOut(
        id=svc.id, name=svc.name, organization_id=svc.organization_id, status=svc.status,
        service_types=svc.service_types, payment_options=svc.payment_options,
        accepting=svc.accepting, capacity_available=capacity.get(svc.id),
        notify_channel=svc.notify_channel,
        webhook_secret=webhook_secret(settings.secret_key, svc.id)
        if svc.notify_channel == "webhook" else None)


@router.get("/v1/providers/services", dependencies=[AdminOnly], tags=["directory"])
def list_services(session: DbSession, settings: AppSettings,
                  service_type: str | None = None) -> list[ServiceOut]:
    services = [svc for svc in repository.services_by_name(session)
                if not service_type or service_type in svc.service_types]
    capacity = repository.capacity_available(session, [svc.id for svc in services])
    return [_service_out(svc, settings, capacity) for svc in services]


@router.patch("/v1/providers/services/{service_id}", dependencies=[AdminOnly],
              tags=["directory"])
def update_service(service_id: str, body: ServiceUpdateIn, session: DbSession,
                   settings: AppSettings) -> ServiceOut:
    """Availability and capacity (and where hand-off notices go)."""
    svc = service.update_service(session, settings, service_id, body)
    return _service_out(svc, settings, repository.capacity_available(session, [svc.id]))


@router.get("/dev/outbox.json", dependencies=[DevOnly, AdminOnly], tags=["dev"],
            include_in_schema=False)
def dev_outbox(session: DbSession,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DevSmsOut]:
    """Texts to providers kept by the dev SMS backend (`LOOKOUT_SMS_BACKEND=outbox`)."""
    return [DevSmsOut(sid=r.sid, to=r.to_masked, body=r.body, segments=r.segments,
                      created_at=r.created_at.isoformat())
            for r in repository.dev_messages(session, limit)]


app = create_app("referrals", title="Lookout referrals",
                 description="Route people who ask for help to treatment they can reach today.")
app.include_router(router)
app.include_router(pages.router)
