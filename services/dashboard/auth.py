"""Officials' accounts, sessions, CSRF, TOTP, the Admin page (accounts, the audit log and
its CSV export, subscriber data) and review actions sent to the alerts API, signed."""

from __future__ import annotations

import csv
import io
import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any

import segno
from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from markupsafe import Markup
from sqlalchemy import select

from services.dashboard import accounts, alerts_client
from services.dashboard.account_models import DashboardAudit
from services.dashboard.security import (
    LOGIN_CSRF_COOKIE,
    PageError,
    Redirect,
    SignedIn,
    SignedInOfficial,
    check_csrf,
    clear_session_cookie,
    client_address,
    install_template_globals,
    login_limiter,
    redirect,
    require_role,
    safe_next,
    secure_cookies,
    set_session_cookie,
    signed_in_any_factor,
)
from services.dashboard.templating import templates
from shared.csvexport import safe_cell
from shared.db import utcnow
from shared.problems import ProblemError
from shared.web import AppSettings, DbSession, settings_of

router = APIRouter(tags=["accounts"])
install_template_globals(templates.env)

Admin = Annotated[SignedIn, require_role("admin")]
TEXT_FIELD = re.compile(r"^text_([a-z]{2})$")


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
    client = client_address(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie.encode(), csrf_token.encode()):
        accounts.audit(session, name.strip().lower()[:64] or "(empty)", "login", "refused",
                       client=client, reason="csrf")
        return _login_page(request, 403, "The form expired: please try again.", next, name)
    if login_limiter(settings).try_take(client) > 0:
        accounts.audit(session, name.strip().lower()[:64] or "(empty)", "login", "refused",
                       client=client, reason="throttled")
        return _login_page(request, 429, "Too many attempts from here: wait a minute.",
                           next, name)
    try:
        account = accounts.authenticate(session, settings, name, password, client)
    except accounts.LoginRefused as exc:
        return _login_page(request, exc.status, exc.detail, next, name)
    second_factor_ok = not account.totp_enabled
    new = accounts.start_session(session, settings, account, second_factor_ok)
    if second_factor_ok:
        account.last_login_at = new.row.created_at
        accounts.audit(session, account.name, "login", official_id=account.id, client=client,
                       second_factor="none")
        target = safe_next(next)
    else:
        accounts.audit(session, account.name, "login_password", official_id=account.id,
                       client=client)
        target = "/login/totp?next=" + safe_next(next)
    response = redirect(target)
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
    client = client_address(request)
    account = signed.account
    if not accounts.check_totp(settings, account, code):
        account.failed_logins += 1
        if account.failed_logins >= settings.dashboard_login_max_failures:
            account.locked_until = utcnow() + timedelta(
                minutes=settings.dashboard_lockout_minutes)
            account.failed_logins = 0
            accounts.end_session(session, signed.session)
            accounts.audit(session, account.name, "login_totp", "failed",
                           official_id=account.id, client=client, reason="wrong code; locked")
            response = redirect("/login")
            clear_session_cookie(response, settings)
            return response
        accounts.audit(session, account.name, "login_totp", "failed", official_id=account.id,
                       client=client, reason="wrong code")
        return page(request, "login_totp.html", 401, next=safe_next(next),
                    error="That code is not right.")
    account.failed_logins = 0
    new = accounts.rotate_session(session, settings, signed.session, account)
    account.last_login_at = new.row.created_at
    accounts.audit(session, account.name, "login", official_id=account.id, client=client,
                   second_factor="totp")
    response = redirect(safe_next(next))
    set_session_cookie(response, settings, new.token)
    return response


@router.post("/logout")
def logout(request: Request, session: DbSession, settings: AppSettings,
           csrf_token: Annotated[str, Form()] = "") -> Response:
    signed = signed_in_any_factor(request, session, settings)
    check_csrf(signed, csrf_token)
    accounts.end_session(session, signed.session)
    accounts.audit(session, signed.account.name, "logout", official_id=signed.account.id,
                   client=client_address(request))
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


# ---- Admin: accounts, audit log, subscriber data ----------------------------------------------

@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, session: DbSession, signed: Admin) -> HTMLResponse:
    return page(request, "admin.html", accounts=accounts.list_accounts(session), created=None,
                error=None)


@router.post("/admin/accounts", response_class=HTMLResponse)
def admin_create(request: Request, session: DbSession, settings: AppSettings, signed: Admin,
                 name: Annotated[str, Form(max_length=64)],
                 role: Annotated[str, Form()], regions: Annotated[str, Form(max_length=500)],
                 csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
    check_csrf(signed, csrf_token)
    try:
        new = accounts.create(session, settings, name, role, regions)
    except ProblemError as exc:
        return page(request, "admin.html", exc.status, accounts=accounts.list_accounts(session),
                    created=None, error=exc.detail)
    accounts.audit(session, signed.account.name, "account_create", official_id=signed.account.id,
                   target=new.account.name, client=client_address(request), role=role,
                   regions=new.account.regions)
    return page(request, "admin.html", 201, accounts=accounts.list_accounts(session),
                created=new, error=None)


@router.post("/admin/accounts/{name}/disable")
def admin_disable(request: Request, session: DbSession, signed: Admin, name: str,
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(signed, csrf_token)
    if name == signed.account.name:
        raise PageError(409, "Conflict", "You cannot disable your own account.")
    try:
        accounts.disable(session, name)
    except ProblemError as exc:
        raise PageError(exc.status, exc.title, exc.detail) from exc
    accounts.audit(session, signed.account.name, "account_disable",
                   official_id=signed.account.id, target=name, client=client_address(request))
    return redirect("/admin")


AUDIT_COLUMNS = ("at", "actor", "action", "target", "outcome", "client", "detail")


def _audit_rows(session: DbSession, limit: int, actor: str | None) -> list[DashboardAudit]:
    query = select(DashboardAudit).order_by(DashboardAudit.id.desc()).limit(limit)
    if actor:
        query = query.where(DashboardAudit.actor == actor.strip().lower())
    return list(session.scalars(query))


@router.get("/admin/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: DbSession, signed: Admin,
               limit: Annotated[int, Query(ge=1, le=5000)] = 200,
               actor: str | None = None) -> HTMLResponse:
    return page(request, "admin_audit.html", rows=_audit_rows(session, limit, actor),
                actor=actor or "", limit=limit)


@router.get("/admin/audit.csv")
def audit_csv(session: DbSession, signed: Admin,
              limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
              actor: str | None = None) -> StreamingResponse:
    rows = _audit_rows(session, limit, actor)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(AUDIT_COLUMNS)
        for row in rows:  # a typed name such as "=HYPERLINK(...)" must not run as a formula
            writer.writerow([safe_cell(v) for v in (
                row.at.isoformat(), row.actor, row.action, row.target or "", row.outcome,
                row.client or "", "" if row.detail is None else _detail_text(row.detail))])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(lines(), media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="dashboard-audit.csv"'})


def _detail_text(detail: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in sorted(detail.items()))


@router.get("/admin/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request, signed: Admin) -> HTMLResponse:
    return page(request, "admin_subscribers.html", exported=None, erased=False, error=None)


@router.post("/admin/subscribers", response_class=HTMLResponse)
async def subscribers_action(request: Request, session: DbSession, settings: AppSettings,
                             signed: Admin, phone: Annotated[str, Form(max_length=40)],
                             action: Annotated[str, Form()],
                             csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
    """Export (decrypts the number: an admin action of this named account, audited here and
    logged by alerts) or erase one subscriber's data, through the alerts API."""
    check_csrf(signed, csrf_token)
    if action not in ("export", "erase"):
        raise PageError(422, "Unknown action", "export or erase")
    call = alerts_client.export_subscriber if action == "export" else \
        alerts_client.erase_subscriber
    response = await call(settings, signed.official, phone)
    ok = response.status_code < 400
    accounts.audit(session, signed.account.name, f"subscriber_{action}",
                   "ok" if ok else "failed", official_id=signed.account.id,
                   target=f"phone ending {phone.strip()[-2:]}", client=client_address(request),
                   status=response.status_code)
    if not ok:
        return page(request, "admin_subscribers.html", response.status_code, exported=None,
                    erased=False, error=_problem_detail(response))
    return page(request, "admin_subscribers.html",
                exported=response.json() if action == "export" else None,
                erased=action == "erase", error=None)


# ---- review actions: the alerts API, with the official's signed credential --------------------

def _problem_detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"The alerts service answered {response.status_code}."
    return str(body.get("detail") or body.get("title") or response.status_code)


@router.get("/alerts/{alert_id}/review", response_class=HTMLResponse)
async def review_page(request: Request, settings: AppSettings, signed: SignedInOfficial,
                      alert_id: uuid.UUID) -> HTMLResponse:
    """The alert as the alerts service has it, with the review actions (the workbench page
    includes the same `review_actions.html`)."""
    response = await alerts_client.alert(settings, signed.official, alert_id)
    if response.status_code >= 400:
        raise PageError(response.status_code, "Alert unavailable", _problem_detail(response))
    return page(request, "review.html", alert=response.json())


@router.post("/alerts/{alert_id}/{action}", response_class=HTMLResponse)
async def review_action(request: Request, session: DbSession, settings: AppSettings,
                        signed: SignedInOfficial, alert_id: uuid.UUID,
                        action: str) -> Response:
    """approve | edit | reject | cancel | update | all-clear, with the form's `csrf_token`,
    `reason` (required to reject), `text_<lang>` texts and `force`. The alerts service
    checks the credential, the role and the regions again; its refusals are shown."""
    if action not in alerts_client.ACTIONS:
        raise PageError(404, "Not found", f"No review action {action!r}.")
    form = await request.form()
    check_csrf(signed, str(form.get("csrf_token") or ""))
    client = client_address(request)
    official = signed.official
    target = f"alert {alert_id}"
    if not official.has_role("reviewer"):
        accounts.audit(session, official.name, f"alert_{action}", "refused",
                       official_id=signed.account.id, target=target, client=client,
                       reason=f"role {official.role}")
        # Answered, not raised: the audit row above is committed with the request.
        return error_page(request, 403, "Forbidden", f"{official.name} is a "
                          f"{official.role}: only reviewers act on alerts.")
    reason = str(form.get("reason") or "").strip()[:1000] or None
    if action in ("reject", "cancel") and not reason:
        raise PageError(422, "Reason required", f"Say why you {action} this alert.")
    texts = {m.group(1): str(v).strip() for k, v in form.items()
             if (m := TEXT_FIELD.match(k)) and str(v).strip()}
    body: dict[str, Any] = {"reason": reason, "force": form.get("force") in ("1", "on",
                                                                           "true")}
    if action in ("edit", "update", "all-clear") and texts:
        body["texts"] = texts
    try:
        response = await alerts_client.act(settings, official, alert_id, action, body)
    except Exception as exc:  # the alerts service is down or slow
        accounts.audit(session, official.name, f"alert_{action}", "error",
                       official_id=signed.account.id, target=target, client=client,
                       error=exc.__class__.__name__)
        return error_page(request, 502, "Alerts service unavailable",
                          "The action was not taken: try again.")
    ok = response.status_code < 400
    accounts.audit(session, official.name, f"alert_{action}", "ok" if ok else "refused",
                   official_id=signed.account.id, target=target, client=client,
                   status=response.status_code, reason=reason)
    if not ok:
        return error_page(request, response.status_code, "Not done",
                          _problem_detail(response))
    result = response.json()
    next_ = form.get("next")
    return redirect(safe_next(str(next_)) if next_ else f"/alerts/{result['id']}/review")
