"""Who is signed in, for every dashboard page: FastAPI dependencies, cookies and CSRF.

For the other dashboard modules:
- `SignedInOfficial` (a dependency): the verified official of the request's session;
  without one, a browser is redirected to /login (and back afterwards).
- `require_role("reviewer")` (a dependency factory): the same, 403 for a lower role.
- `check_csrf(signed_in, csrf_token)`: call on every POST that changes something (the form
  sends the hidden field `csrf_token`); in templates `{{ csrf_token(request) }}` gives it
  (`csrf_field(request)` the whole hidden input).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from services.dashboard import accounts, sessions
from services.dashboard.account_models import DashboardSession, OfficialAccount
from shared.officials import Official
from shared.ratelimit import KeyedRateLimiter
from shared.settings import Settings
from shared.web import AppSettings, DbSession

SESSION_COOKIE = "lookout_session"
LOGIN_CSRF_COOKIE = "lookout_login_csrf"
# Pages an official whose second factor is not settled yet may still see.
SECOND_FACTOR_PATHS = ("/login/totp", "/account/totp", "/logout")


class Redirect(Exception):
    """Answer with a 303 to `location` (e.g. to /login when no one is signed in)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class PageError(Exception):
    """Answer with the error page (403, 404, 409, 422, 502...) and this message."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail


@dataclass
class SignedIn:
    """The official of a live session (`official`: what review credentials carry)."""

    official: Official
    account: OfficialAccount
    session: DashboardSession
    csrf_token: str  # a copy: error pages render after the request's session rolled back


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def secure_cookies(settings: Settings) -> bool:
    """Cookies are Secure (HTTPS only) outside dev and test (which run on plain loopback)."""
    return settings.env == "prod"


def set_session_cookie(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(settings), path="/",
                        max_age=int(settings.dashboard_session_absolute_hours * 3600))


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=secure_cookies(settings))


def _login_redirect(request: Request) -> Redirect:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/login?next={quote(target, safe='')}")


def signed_in_any_factor(request: Request, session: DbSession,
                         settings: AppSettings) -> SignedIn:
    """The session's official even before the second factor (for the TOTP pages)."""
    found = sessions.find_session(session, settings, request.cookies.get(SESSION_COOKIE))
    if found is None:
        raise _login_redirect(request)
    row, account = found
    signed = SignedIn(accounts.official_of(account), account, row, row.csrf_token)
    request.state.signed_in = signed
    return signed


def signed_in(request: Request, session: DbSession, settings: AppSettings) -> SignedIn:
    """The verified official of this request (to /login without one; to the TOTP step or
    enrolment while the second factor is not settled)."""
    signed = signed_in_any_factor(request, session, settings)
    if not signed.session.second_factor_ok:
        raise Redirect("/login/totp")
    if accounts.totp_required(settings, signed.account) and not signed.account.totp_enabled \
            and request.url.path not in SECOND_FACTOR_PATHS:
        raise Redirect("/account/totp")
    return signed


SignedInOfficial = Annotated[SignedIn, Depends(signed_in)]


def require_role(role: str) -> Any:
    """A dependency: the signed-in official, who must hold at least `role` (403 page)."""

    def dependency(signed: SignedInOfficial) -> SignedIn:
        if not signed.official.has_role(role):
            raise PageError(403, "Forbidden",
                            f"This needs the {role} role; {signed.official.name} is a "
                            f"{signed.official.role}.")
        return signed

    return Depends(dependency)


def check_csrf(signed: SignedIn, token: str | None) -> None:
    if not token or not secrets.compare_digest(token.encode(), signed.csrf_token.encode()):
        raise PageError(403, "Forbidden", "The form's CSRF token is missing or stale: "
                        "reload the page and try again.")


def csrf_token(request: Request) -> str:
    """For templates: the CSRF token of the signed-in session ('' before login)."""
    signed = getattr(request.state, "signed_in", None)
    return signed.csrf_token if signed is not None else ""


def csrf_field(request: Request) -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        csrf_token(request))


def install_template_globals(env: Any) -> None:
    """Give a Jinja2 environment `csrf_token(request)` and `csrf_field(request)`."""
    env.globals["csrf_token"] = csrf_token
    env.globals["csrf_field"] = csrf_field


# Login attempts per client address, in process memory (lockout per account is in the DB).
_login_limiters: dict[float, KeyedRateLimiter] = {}


def login_limiter(settings: Settings) -> KeyedRateLimiter:
    per_minute = settings.dashboard_login_rate_per_minute
    limiter = _login_limiters.get(per_minute)
    if limiter is None:
        limiter = _login_limiters[per_minute] = KeyedRateLimiter(per_minute / 60,
                                                                max(per_minute, 1))
    return limiter


def check_login_form(request: Request, session: DbSession, settings: AppSettings,
                     name: str, csrf_token: str) -> None:
    """The login form carries its cookie's CSRF token (403) and its client is not over the
    rate of attempts (429): `accounts.LoginRefused` otherwise, audited."""
    client = client_address(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie.encode(), csrf_token.encode()):
        raise accounts.refuse_login(session, name, client, "csrf",
                                    "The form expired: please try again.", 403)
    if login_limiter(settings).try_take(client) > 0:
        raise accounts.refuse_login(session, name, client, "throttled",
                                    "Too many attempts from here: wait a minute.", 429)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no //host) is followed after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
