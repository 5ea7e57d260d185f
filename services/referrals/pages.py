"""The referrals web pages: the public help page (no login) and the signed provider link,
which a provider opens to see a referral's status and update it."""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import Counter

from services.referrals import service
from services.referrals.matching import SERVICE_TYPES
from shared.db import utcnow
from shared.problems import ProblemError
from shared.ratelimit import KeyedRateLimiter
from shared.settings import Settings
from shared.web import AppSettings, DbSession

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
log = logging.getLogger(__name__)
LINK_THROTTLED = Counter("lookout_referrals_link_throttled_total",
                         "Provider link requests refused by the per-client limit")


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
    return {"service_types": sorted(SERVICE_TYPES), "languages": service.LANGUAGES,
            "payments": service.PAYMENTS, "consent": service.WEB_CONSENT.format(
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
    form = service.HelpForm(service_type, place, language, payment, age)
    try:
        region, options = service.web_referral(session, settings, form, consent, utcnow())
    except service.HelpFormError as exc:
        return templates.TemplateResponse(request, "help.html", _form_context(
            settings, error=str(exc), form=form.fields()), status_code=422)
    return templates.TemplateResponse(request, "help.html", _form_context(
        settings, options=options, form=form.fields(), region=region.name))
