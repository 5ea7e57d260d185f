"""Who is calling: a site's API key checked (cached on the hot path) and its rate limit, as
FastAPI dependencies and as a function the handlers that read their own body call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.ingest import metrics
from services.ingest.service.common import Caller
from services.ingest.service.sites import authenticate, cached_caller
from shared.db import session_scope
from shared.problems import ProblemError
from shared.ratelimit import KeyedRateLimiter
from shared.settings import Settings
from shared.web import AppSettings, DbSession, bearer_token

_limiters: dict[tuple[float, float], KeyedRateLimiter] = {}


def _limiter(settings: Settings) -> KeyedRateLimiter:
    key = (settings.ingest_rate_per_second, settings.ingest_rate_burst)
    if key not in _limiters:
        _limiters[key] = KeyedRateLimiter(*key)
    return _limiters[key]


def kind_of(path: str) -> metrics.Kind:
    return "overdose_report" if "overdose" in path else "drug_check"


def _count_refused(request: Request, exc: ProblemError) -> None:
    if request.method == "POST":
        metrics.count(kind_of(request.url.path), "rejected",
                      "unauthorized" if exc.status == 401 else "forbidden")


def check_caller(session: Session, settings: Settings, request: Request,
                 authorization: str | None, scope: str | None) -> Caller:
    try:
        caller = authenticate(session, bearer_token(authorization), scope)
    except ProblemError as exc:
        _count_refused(request, exc)
        raise
    _rate_limit(settings, request, caller)
    return caller


def _authenticate(url: str, api_key: str, scope: str | None) -> Caller:
    with session_scope(url) as session:
        return authenticate(session, api_key, scope)


async def caller_of(request: Request, settings: Settings, scope: str) -> Caller:
    """The hot path's auth and rate limit, on the event loop: the database (in a worker
    thread) only when this process has not checked the key within the last seconds. (It
    reads the header itself: a `Depends(HTTPBearer)` costs a tenth of a request.)"""
    try:
        api_key = bearer_token(request.headers.get("authorization"))
        caller = cached_caller(api_key, scope)
        if caller is None:
            caller = await run_in_threadpool(_authenticate, settings.sqlalchemy_url, api_key,
                                             scope)
    except ProblemError as exc:
        _count_refused(request, exc)
        raise
    _rate_limit(settings, request, caller)
    return caller


def _rate_limit(settings: Settings, request: Request, caller: Caller) -> None:
    wait = _limiter(settings).try_take(str(caller.key_id))
    if wait > 0:
        if request.method == "POST":
            metrics.count(kind_of(request.url.path), "rejected", "rate_limited")
        raise ProblemError(429, "Too many requests",
                           f"Rate limit of {settings.ingest_rate_per_second:g} requests/s per "
                           "API key exceeded; retry later.",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})


_bearer = HTTPBearer(auto_error=False, description="The site's API key")


def _caller(scope: str | None) -> Any:
    def dependency(
        session: DbSession, settings: AppSettings, request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    ) -> Caller:
        authorization = (f"Bearer {credentials.credentials}" if credentials is not None
                         else None)
        return check_caller(session, settings, request, authorization, scope)

    return Depends(dependency)


ResultsCaller = Annotated[Caller, _caller("results")]
ReportsCaller = Annotated[Caller, _caller("reports")]
AnyCaller = Annotated[Caller, _caller(None)]
