"""What every FastAPI service shares: the app factory, the DB session dependency, admin auth."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline
from sqlalchemy.orm import Session

from shared.db import get_engine, session_scope
from shared.metrics import instrument_app
from shared.problems import ProblemError, install_problem_handlers
from shared.settings import Settings, get_settings


def create_app(service: str, *, title: str, description: str = "") -> FastAPI:
    # Swagger UI and ReDoc from the fastapi-offline package, not from a CDN: /docs works
    # without internet (FastAPI's own /docs page loads its JavaScript from jsdelivr).
    app = FastAPIOffline(title=title, description=description, version="0.1.0")
    install_problem_handlers(app)
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


def require_admin(
    settings: AppSettings, authorization: Annotated[str | None, Header()] = None
) -> None:
    token = bearer_token(authorization)
    if not hmac.compare_digest(token, settings.admin_token):
        raise ProblemError(403, "Forbidden", "Admin token required.")


AdminOnly = Depends(require_admin)
