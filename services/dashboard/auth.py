"""Signing in: the login page (throttled, with its own CSRF cookie), the second factor
(TOTP) and its enrolment, account setup links, logout; the error pages and the page helper
the other route modules share. The Admin page is in `admin_routes`, review actions in
`review_routes`."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import segno
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from services.dashboard import accounts, sessions
from services.dashboard.security import (
    LOGIN_CSRF_COOKIE,
    PageError,
    Redirect,
    SignedInOfficial,
    check_csrf,
    check_login_form,
    clear_session_cookie,
    client_address,
    install_template_globals,
    redirect,
    safe_next,
    secure_cookies,
    set_session_cookie,
    signed_in_any_factor,
)
from services.dashboard.templating import templates
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import AppSettings, DbSession, settings_of

router = APIRouter(tags=["accounts"])
install_template_globals(templates.env)



def install(app: FastAPI) -> None:
    """The dashboard's answers to `Redirect` (a 303) and `PageError` (the error page)."""

    @app.exception_handler(Redirect)
    async def _redirect(request: Request, exc: Redirect) -> Response:
        return redirect(exc.location)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return error_page(request, exc.status, exc.title, exc.detail)


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    return page(request, "error.html", status, title=title, detail=detail)


def page(request: Request, template: str, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    signed = getattr(request.state, "signed_in", None)
    return templates.TemplateResponse(request, template, {"signed": signed, **context},
                                      status_code=status_code)


# ---- login, second factor, logout ------------------------------------------------------------

def _login_page(request: Request, status_code: int = 200, error: str | None = None,
                next_: str = "/", name: str = "") -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = page(request, "login.html", status_code, error=error, next=safe_next(next_),
                    name=name, login_csrf=token)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(settings_of(request)), path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_page(request, next_=next)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: DbSession, settings: AppSettings,
          name: Annotated[str, Form(max_length=64)],
          password: Annotated[str, Form(max_length=1024)],
          csrf_token: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/") -> Response:
    try:
        check_login_form(request, session, settings, name, csrf_token)
        new = accounts.sign_in(session, settings, name, password, client_address(request))
    except accounts.LoginRefused as exc:
        return _login_page(request, exc.status, exc.detail, next, name)
    response = redirect(safe_next(next) if new.row.second_factor_ok
                        else "/login/totp?next=" + safe_next(next))
    set_session_cookie(response, settings, new.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login/totp", response_class=HTMLResponse)
def totp_page(request: Request, session: DbSession, settings: AppSettings,
              next: str = "/") -> HTMLResponse:
    signed = signed_in_any_factor(request, session, settings)
    if signed.session.second_factor_ok:
        raise Redirect(safe_next(next))
    return page(request, "login_totp.html", next=safe_next(next), error=None)


@router.post("/login/totp", response_class=HTMLResponse)
def totp_check(request: Request, session: DbSession, settings: AppSettings,
               code: Annotated[str, Form(max_length=12)],
               csrf_token: Annotated[str, Form()] = "",
               next: Annotated[str, Form()] = "/") -> Response:
    signed = signed_in_any_factor(request, session, settings)
    check_csrf(signed, csrf_token)
    try:
        new = accounts.confirm_second_factor(session, settings, signed.session,
                                             signed.account, code, client_address(request))
    except accounts.LockedOut:
        return _signed_out(settings)
    except accounts.LoginRefused as exc:
        return page(request, "login_totp.html", exc.status, next=safe_next(next),
                    error=exc.detail)
    response = redirect(safe_next(next))
    set_session_cookie(response, settings, new.token)
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession, settings: AppSettings,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    signed = signed_in_any_factor(request, session, settings)
    check_csrf(signed, csrf_token)
    sessions.end_session(session, signed.session)
    accounts.audit(session, signed.account.name, "logout", official_id=signed.account.id,
                   client=client_address(request))
    return _signed_out(settings)


def _signed_out(settings: Settings) -> Response:
    """To the login page, the session cookie cleared."""
    response = redirect("/login")
    clear_session_cookie(response, settings)
    return response


# ---- account setup (the one-time link) and TOTP enrolment -------------------------------------

@router.get("/setup/{token}", response_class=HTMLResponse)
def setup_page(request: Request, session: DbSession, token: str) -> HTMLResponse:
    try:
        account = accounts.account_for_setup(session, token)
    except ProblemError as exc:
        raise PageError(404, "Not found", exc.detail) from exc
    return page(request, "setup.html", name=account.name, error=None)


@router.post("/setup/{token}", response_class=HTMLResponse)
def setup(request: Request, session: DbSession, settings: AppSettings, token: str,
          password: Annotated[str, Form(max_length=1024)],
          password2: Annotated[str, Form(max_length=1024)]) -> Response:
    # The unguessable token in the URL is the proof here (no session yet), so it stands in
    # for the CSRF token: a forged form cannot know it.
    try:
        account = accounts.account_for_setup(session, token)
    except ProblemError as exc:
        raise PageError(404, "Not found", exc.detail) from exc
    if password != password2:
        return page(request, "setup.html", 422, name=account.name,
                    error="The two passwords differ.")
    try:
        accounts.set_password(settings, account, password)
    except ProblemError as exc:
        return page(request, "setup.html", 422, name=account.name, error=exc.detail)
    accounts.audit(session, account.name, "password_set", official_id=account.id,
                   client=client_address(request))
    return redirect("/login")


@router.get("/account/totp", response_class=HTMLResponse)
def totp_enrol_page(request: Request, session: DbSession, settings: AppSettings,
                    signed: SignedInOfficial) -> HTMLResponse:
    account = signed.account
    if account.totp_enabled:
        return page(request, "totp_enrol.html", enabled=True)
    secret = accounts.totp_secret(settings, account) or accounts.new_totp_secret(settings,
                                                                               account)
    uri = accounts.totp_uri(secret, account.name)
    qr = Markup(segno.make(uri, error="m").svg_inline(scale=4, title="TOTP QR code"))  # noqa: S704
    return page(request, "totp_enrol.html", enabled=False, secret=secret, uri=uri, qr=qr,
                required=accounts.totp_required(settings, account), error=None)


@router.post("/account/totp", response_class=HTMLResponse)
def totp_enrol(request: Request, session: DbSession, settings: AppSettings,
               signed: SignedInOfficial, code: Annotated[str, Form(max_length=12)],
               csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(signed, csrf_token)
    account = signed.account
    if account.totp_enabled:
        raise Redirect("/account/totp")
    if not accounts.check_totp(settings, account, code):
        accounts.audit(session, account.name, "totp_enrol", "failed", official_id=account.id,
                       client=client_address(request))
        secret = accounts.totp_secret(settings, account) or ""
        uri = accounts.totp_uri(secret, account.name)
        return page(request, "totp_enrol.html", 422, enabled=False, secret=secret, uri=uri,
                    qr=None, required=accounts.totp_required(settings, account),
                    error="That code is not right: check the device's clock and try again.")
    account.totp_enabled = True
    accounts.audit(session, account.name, "totp_enrol", official_id=account.id,
                   client=client_address(request))
    return redirect("/")
