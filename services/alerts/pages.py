"""The alerts web pages: the signup page (double opt-in) and the dev outbox."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import Counter

from services.alerts import repository, signup
from services.alerts.schemas import (
    OutboxMessageOut,
)
from services.alerts.sms import SmsError, make_backend
from shared import csrf
from shared.db import session_scope, utcnow
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import (
    AppSettings,
    DbSession,
    DevOnly,
)

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter()
SIGNUP_CODES = Counter("lookout_alerts_signup_codes_total", "Signup codes texted", ["outcome"])


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
    await _text_code(settings, code)
    return _signup_page(request, settings, step="code", signup_id=str(code.signup_id),
                        language=language)


async def _text_code(settings: Settings, code: signup.CodeToSend) -> None:
    if not code.send:
        SIGNUP_CODES.labels("not_texted").inc()
        return
    sms = make_backend(settings)
    try:
        await sms.send(code.phone, code.body)
        SIGNUP_CODES.labels("sent").inc()
    except SmsError:  # answered like any other: the page must not tell numbers apart
        SIGNUP_CODES.labels("failed").inc()
    finally:
        await sms.close()


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
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[OutboxMessageOut]:
    return [OutboxMessageOut(sid=m.sid, to=m.to_masked, body=m.body, segments=m.segments,
                             created_at=m.created_at)
            for m in repository.dev_outbox(session, limit)]


@router.get("/dev/outbox", response_class=HTMLResponse, dependencies=[DevOnly], tags=["dev"],
            include_in_schema=False)
def outbox_page(request: Request, session: DbSession) -> HTMLResponse:
    rows = repository.dev_outbox(session, 100)
    return templates.TemplateResponse(request, "outbox.html", {"messages": rows})

