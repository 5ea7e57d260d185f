"""The referrals HTTP API: the public help page, staff referrals (a site API key with the
`referrals` scope, or the admin token), provider updates (signed link or API), and the
directory's availability and capacity.

The SMS conversation runs in the `referrals-worker` process (`services.referrals.agents`).
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Header, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import Counter
from sqlalchemy.orm import Session

from services.referrals import listings, repository, service
from services.referrals import models as m
from services.referrals.geo import centroid, resolve_place
from services.referrals.matching import SERVICE_TYPES
from services.referrals.notify import ChannelNotifier, NoticeQueue, ProviderNotifier
from services.referrals.schemas import (
    ChoiceIn,
    OptionOut,
    ReferralOut,
    ServiceOut,
    ServiceUpdateIn,
    StaffReferralIn,
    StatusIn,
)
from shared.crypto import webhook_secret
from shared.db import utcnow
from shared.problems import ProblemError
from shared.ratelimit import KeyedRateLimiter
from shared.regions import RegionNotFoundError, get_region
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

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
E164 = re.compile(r"\+[1-9]\d{7,14}")
log = logging.getLogger(__name__)
LINK_THROTTLED = Counter("lookout_referrals_link_throttled_total",
                         "Provider link requests refused by the per-client limit")
NOTICES = NoticeQueue()  # provider notices, sent after the choice is answered
REFERRALS = Counter("lookout_referrals_requests_total", "Referral requests", ["source"])
WEB_CONSENT = ("Lookout keeps this request for {days:g} days to count how many people asked "
               "for help, then deletes it. Nothing you enter here is sent to a provider: you "
               "contact the place you choose yourself. Do not enter your name.")
LANGUAGES = {"en": "English", "es": "Español", "fr": "Français", "zh": "中文", "vi": "Tiếng Việt"}
PAYMENTS = {"": "Not sure", "medicaid": "Medicaid / public insurance",
            "uninsured": "No insurance", "sliding_fee": "Sliding fee",
            "private_insurance": "Private insurance"}


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


def _region_for(body_postal: str | None, region_id: str | None) -> str:
    if region_id:
        try:
            get_region(region_id)
        except RegionNotFoundError:
            raise ProblemError(422, "Unknown region", region_id) from None
        if centroid(region_id) is None:
            raise ProblemError(422, "Region too coarse",
                               "give a postal code or a city-level region")
        return region_id
    if body_postal:
        place = resolve_place(body_postal)
        if place is None:
            raise ProblemError(422, "Unknown place", f"no region for {body_postal!r}")
        return place.id
    raise ProblemError(422, "Location required",
                       "give postal_code or region_id: options are matched by distance")


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


def _get(session: Session, referral_id: uuid.UUID,
         caller: service.StaffCaller | None = None) -> m.Referral:
    referral = session.get(m.Referral, referral_id)
    if referral is None or (caller is not None and not caller.may_see(referral)):
        raise ProblemError(404, "Not found", "no such referral")
    return referral


@router.post("/v1/referrals", status_code=201, tags=["referrals"])
def staff_referral(body: StaffReferralIn, session: DbSession, settings: AppSettings,
                   caller: Staff) -> ReferralOut:
    """Site staff refer someone on their behalf (`Authorization: Bearer <site API key>` with
    the `referrals` scope; the referral records the site), or an admin (admin token).
    Returns the matched options; choose one with `POST /v1/referrals/{id}/choice`."""
    now = utcnow()
    referral = service.create_referral(
        session, settings, source="staff", now=now, actor="staff", site_id=caller.site_id,
        consent=service.ConsentIn(body.consent.shared_fields, body.consent.wording, "staff"),
        service_types=body.service_types, language=body.language,
        region_id=_region_for(body.postal_code, body.region_id), payment=body.payment,
        age=body.age, text=body.note, callback_phone=body.callback_phone)
    service.offer_options(session, settings, referral, now)
    REFERRALS.labels("staff").inc()
    return _referral_out(session, referral)


@router.get("/v1/referrals/stats", dependencies=[AdminOnly], tags=["referrals"])
def referral_stats(session: DbSession) -> dict[str, Any]:
    """Counts by status and source (no personal data)."""
    return service.stats(session)


@router.get("/v1/referrals/{referral_id}", tags=["referrals"])
def get_referral(referral_id: uuid.UUID, session: DbSession, caller: Staff) -> ReferralOut:
    """A referral with its history and notices (a site sees only its own)."""
    return _referral_out(session, _get(session, referral_id, caller), full=True)


@router.post("/v1/referrals/{referral_id}/choice", tags=["referrals"])
def choose_option(referral_id: uuid.UUID, body: ChoiceIn, request: Request,
                  session: DbSession, settings: AppSettings, caller: Staff) -> ReferralOut:
    """The person (through staff) picks an option: the provider is notified with only what
    was consented."""
    referral = _get(session, referral_id, caller)
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
    _get(session, referral_id, caller)
    referral = service.provider_update(session, settings, referral_id, body.status,
                                       "provider" if caller.site_id is None else "staff",
                                       utcnow())
    return _referral_out(session, referral)


# The token is in the address: no Referer may carry it elsewhere, no cache may keep it.
LINK_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
                "X-Robots-Tag": "noindex"}
_link_limiters: dict[tuple[float, float], KeyedRateLimiter] = {}


def _throttle_links(request: Request, settings: Settings) -> None:
    """Provider links are capability URLs: each client address gets a token bucket, so
    nobody can try tokens (or referral ids) quickly."""
    key = (settings.referrals_link_rate_per_minute / 60, settings.referrals_link_burst)
    limiter = _link_limiters.setdefault(key, KeyedRateLimiter(*key))
    wait = limiter.try_take(request.client.host if request.client else "")
    if wait > 0:
        LINK_THROTTLED.inc()
        log.warning("provider link requests throttled for a client")
        raise ProblemError(429, "Too many requests", "Try again later.",
                           headers={"Retry-After": str(math.ceil(wait)), **LINK_HEADERS})


def _link_problem(exc: ProblemError) -> ProblemError:
    exc.headers = {**(exc.headers or {}), **LINK_HEADERS}
    return exc


@router.get("/r/{referral_id}", response_class=HTMLResponse, include_in_schema=False)
def provider_page(request: Request, referral_id: uuid.UUID, session: DbSession,
                  settings: AppSettings, t: Annotated[str, Query(max_length=64)] = ""
                  ) -> HTMLResponse:
    """The signed link in a provider's notice: see the referral's status and update it."""
    _throttle_links(request, settings)
    try:
        referral = service.check_link(session, settings, referral_id, t, utcnow())
    except ProblemError as exc:
        raise _link_problem(exc) from None
    return templates.TemplateResponse(request, "provider.html", {
        "referral": referral, "token": t, "done": None}, headers=LINK_HEADERS)


@router.post("/r/{referral_id}", response_class=HTMLResponse, include_in_schema=False)
def provider_post(request: Request, referral_id: uuid.UUID, session: DbSession,
                  settings: AppSettings, t: Annotated[str, Form(max_length=64)],
                  status: Annotated[str, Form(max_length=20)]) -> HTMLResponse:
    _throttle_links(request, settings)
    try:
        referral = service.provider_update(session, settings, referral_id, status,
                                           "provider", utcnow(), token=t)
    except ProblemError as exc:
        raise _link_problem(exc) from None
    return templates.TemplateResponse(request, "provider.html", {
        "referral": referral, "token": t, "done": status}, headers=LINK_HEADERS)


@router.get("/help", response_class=HTMLResponse, tags=["public"])
def help_form(request: Request, settings: AppSettings) -> HTMLResponse:
    return templates.TemplateResponse(request, "help.html", _form_context(settings))


def _form_context(settings: Settings, **extra: Any) -> dict[str, Any]:
    return {"service_types": sorted(SERVICE_TYPES), "languages": LANGUAGES,
            "payments": PAYMENTS, "consent": WEB_CONSENT.format(
                days=settings.referrals_retention_days), "options": None, "error": None,
            "form": {}, **extra}


@router.post("/help", response_class=HTMLResponse, tags=["public"])
def help_submit(
    request: Request, session: DbSession, settings: AppSettings,
    service_type: Annotated[str, Form(max_length=40)],
    place: Annotated[str, Form(max_length=60)],
    language: Annotated[str, Form(max_length=8)] = "en",
    payment: Annotated[str, Form(max_length=20)] = "",
    age: Annotated[str, Form(max_length=3)] = "",
    consent: Annotated[str, Form(max_length=3)] = "",
) -> HTMLResponse:
    """No login, no name, no phone: the request is recorded and the options shown here."""
    form = {"service_type": service_type, "place": place, "language": language,
            "payment": payment, "age": age}
    error = None
    region = resolve_place(place)
    if consent != "yes":
        error = "Please tick the box to say you read how we use this request."
    elif service_type not in SERVICE_TYPES:
        error = "Please choose the kind of help you need."
    elif region is None:
        error = "We don't know that place. Try a ZIP code, or a city like 'Surrey, BC'."
    elif payment and payment not in PAYMENTS:
        error = "Please choose how you would pay."
    elif age and not (age.isdigit() and int(age) <= 120):
        error = "Age must be a number."
    if error or region is None:
        return templates.TemplateResponse(request, "help.html", _form_context(
            settings, error=error, form=form), status_code=422)
    now = utcnow()
    referral = service.create_referral(
        session, settings, source="web", now=now, service_types=[service_type],
        language=language if language in LANGUAGES else "en", region_id=region.id,
        payment=payment or None, age=int(age) if age else None,
        consent=service.ConsentIn([], WEB_CONSENT.format(
            days=settings.referrals_retention_days), "web"))
    options = service.offer_options(session, settings, referral, now)
    REFERRALS.labels("web").inc()
    return templates.TemplateResponse(request, "help.html", _form_context(
        settings, options=options, form=form, region=region.name))


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
    svc = listings.update_service(session, settings, service_id, body)
    return _service_out(svc, settings, repository.capacity_available(session, [svc.id]))


@router.get("/dev/outbox.json", dependencies=[DevOnly, AdminOnly], tags=["dev"],
            include_in_schema=False)
def dev_outbox(session: DbSession,
               limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
    """Texts to providers kept by the dev SMS backend (`LOOKOUT_SMS_BACKEND=outbox`)."""
    rows = repository.dev_messages(session, limit)
    return [{"sid": r.sid, "to": r.to_masked, "body": r.body, "segments": r.segments,
             "created_at": r.created_at.isoformat()} for r in rows]


app = create_app("referrals", title="Lookout referrals",
                 description="Route people who ask for help to treatment they can reach today.")
app.include_router(router)
