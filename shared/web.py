"""What every FastAPI service shares: the app factory, the DB session dependency, admin auth."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline
from prometheus_client import Counter
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import get_engine, session_scope
from shared.edge import BodyLimit, LimitOf, OpsExposure, SecurityHeaders, default_limit
from shared.metrics import instrument_app
from shared.officials import CredentialError, Official, verify
from shared.problems import ProblemError, install_problem_handlers
from shared.ratelimit import KeyedRateLimiter, client_key
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)
operators_log = logging.getLogger("lookout.operators")
ADMIN_FAILURES = Counter("lookout_admin_auth_failures_total",
                         "Failed admin-token attempts: refused (a wrong token) or throttled "
                         "(429, the token not looked at)", ["outcome"])


def create_app(service: str, *, title: str, description: str = "",
               body_limit: LimitOf = default_limit,
               on_body_refused: Callable[[str], None] | None = None) -> FastAPI:
    """A service's app: problem+json errors, metrics, /healthz, and the edge of
    shared/edge.py (body limit `body_limit(path, settings)`, /metrics and docs exposure,
    security headers)."""
    # Swagger UI and ReDoc from the fastapi-offline package, not from a CDN: /docs works
    # without internet (FastAPI's own /docs page loads its JavaScript from jsdelivr).
    app = FastAPIOffline(title=title, description=description, version="0.1.0")
    install_problem_handlers(app)

    def settings() -> Settings:
        override: Callable[[], Settings] = app.dependency_overrides.get(get_settings,
                                                                       get_settings)
        return override()

    # innermost first: the metrics middleware (outermost) counts what the edge refuses
    app.add_middleware(BodyLimit, settings=settings, limit=body_limit,
                       on_refused=on_body_refused)
    app.add_middleware(OpsExposure, settings=settings)
    app.add_middleware(SecurityHeaders)
    instrument_app(app, service)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict[str, str]:
        """Answers when the database does. A `SELECT 1` costs far less than a hop to a worker
        thread, so on SQLite (a local file: it cannot hang on a network) it runs on the
        event loop; a database server is asked from a worker thread."""
        url = settings_of(request).sqlalchemy_url
        if url.startswith("sqlite"):
            _select_1(url)
        else:
            await run_in_threadpool(_select_1, url)
        return {"status": "ok", "service": service}

    return app


def _select_1(url: str) -> None:
    with get_engine(url).connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def settings_of(request: Request) -> Settings:
    """The settings in an `async def` handler without a `Depends` (FastAPI runs a plain
    function dependency in a worker thread), honouring a test's override of `get_settings`."""
    override: Callable[[], Settings] = request.app.dependency_overrides.get(get_settings,
                                                                          get_settings)
    return override()


def _session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raises."""
    with session_scope(settings.sqlalchemy_url) as session:
        yield session


# scope="function": the commit runs when the handler returns and before the response is
# sent, so a client is answered only once its write is stored, and a failed commit is the
# error it gets (FastAPI's default for a `yield` dependency, "request", commits after the
# answer has gone out).
DbSession = Annotated[Session, Depends(_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings)]


def bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ProblemError(401, "Unauthorized", "Send 'Authorization: Bearer <API key>'.",
                           headers={"WWW-Authenticate": "Bearer"})
    return authorization[7:].strip()


def _admin_failures(app: FastAPI, settings: Settings) -> KeyedRateLimiter:
    """The app's limiter of failed admin-token attempts per client (made on first use)."""
    rate = settings.admin_failures_per_minute / 60
    limiter: KeyedRateLimiter | None = getattr(app.state, "admin_failures", None)
    if limiter is None or (limiter.rate, limiter.capacity) != \
            (rate, settings.admin_failures_burst):
        limiter = KeyedRateLimiter(rate, settings.admin_failures_burst)
        app.state.admin_failures = limiter
    return limiter


def require_admin(
    request: Request, settings: AppSettings,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """Operators' endpoints (site keys, deliveries, subscriber erasure...): the shared admin
    token (automation; `admin-token`) or the signed credential of an official with the
    admin role (by name). Returns who, and every call is logged with it. Failed attempts
    are throttled per client: past `LOOKOUT_ADMIN_FAILURES_BURST`,
    `LOOKOUT_ADMIN_FAILURES_PER_MINUTE` a minute; a throttled client gets 429 without its
    token being looked at. Each failure is logged and counted."""
    token = bearer_token(authorization)
    with failed_tokens_throttled(request, settings, "admin token"):
        who = _operator(settings, token)
        if who is None:
            raise ProblemError(403, "Forbidden", "Admin token required.")
    operators_log.info("operator %s: %s %s", who, request.method, request.url.path)
    return who


@contextmanager
def failed_tokens_throttled(request: Request, settings: Settings, what: str) -> Iterator[None]:
    """Guesses of a bearer token are throttled per client: a throttled client gets 429 before
    its token is looked at; a 401 or 403 raised inside the block counts as a failed attempt
    (logged with a keyed hash of the client, and counted)."""
    client = client_key(settings.secret_key, request.client.host if request.client else "")
    limiter = _admin_failures(request.app, settings)
    wait = limiter.wait_for(client)
    if wait > 0:
        ADMIN_FAILURES.labels("throttled").inc()
        raise ProblemError(429, "Too many requests",
                           f"Too many failed {what} attempts; try again later.",
                           headers={"Retry-After": str(math.ceil(wait))})
    try:
        yield
    except ProblemError as exc:
        if exc.status in (401, 403):
            limiter.try_take(client)
            ADMIN_FAILURES.labels("refused").inc()
            throttled = limiter.wait_for(client) > 0
            log.warning("%s refused%s", what, "; client throttled" if throttled else "",
                        extra={"fields": {"client": client[:12], "path": request.url.path}})
        raise


def _operator(settings: Settings, token: str) -> str | None:
    if hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return "admin-token"
    try:
        official = verify(settings, token)
    except CredentialError:
        return None
    return f"official:{official.name}" if official.has_role("admin") else None


AdminOnly = Depends(require_admin)
Operator = Annotated[str, Depends(require_admin)]


def require_dev(settings: AppSettings) -> None:
    """Development-only routes (`/dev/*`) do not exist outside dev and test: 404, as for any
    unknown path."""
    if settings.env not in ("dev", "test"):
        raise StarletteHTTPException(404)


DevOnly = Depends(require_dev)


def verified_official(settings: Settings, authorization: str | None, role: str) -> Official:
    """The official named by the dashboard's signed credential in `Authorization: Bearer`
    (shared/officials.py), who must hold at least `role`: 401 when the credential is
    missing, forged, expired or signed by another key; 403 when the role is too low."""
    try:
        official = verify(settings, bearer_token(authorization))
    except CredentialError as exc:
        raise ProblemError(exc.status, "Unauthorized", exc.detail,
                           headers={"WWW-Authenticate": "Bearer"}) from exc
    if not official.has_role(role):
        raise ProblemError(403, "Forbidden",
                           f"The official {official.name!r} is a {official.role}; this needs "
                           f"a {role}.")
    return official


def require_reviewer(settings: AppSettings,
                     authorization: Annotated[str | None, Header()] = None) -> Official:
    return verified_official(settings, authorization, "reviewer")


def require_official_admin(settings: AppSettings,
                           authorization: Annotated[str | None, Header()] = None) -> Official:
    return verified_official(settings, authorization, "admin")


def require_viewer_or_operator(
    request: Request, settings: AppSettings,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """Read-only views: any official's signed credential, or the operators' token (as
    `require_admin`, throttled and logged)."""
    token = bearer_token(authorization)
    try:
        return f"official:{verify(settings, token).name}"
    except CredentialError:
        return require_admin(request, settings, authorization)


Reviewer = Annotated[Official, Depends(require_reviewer)]
ViewerOrOperator = Depends(require_viewer_or_operator)
OfficialAdmin = Annotated[Official, Depends(require_official_admin)]
