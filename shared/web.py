"""What every FastAPI service shares: the app factory, the DB session dependency, admin auth."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.db import session_scope
from shared.metrics import instrument_app
from shared.problems import ProblemError, install_problem_handlers
from shared.settings import Settings, get_settings


def create_app(service: str, *, title: str, description: str = "") -> FastAPI:
    app = FastAPI(title=title, description=description, version="0.1.0")
    install_problem_handlers(app)
    instrument_app(app, service)

    @app.get("/healthz", tags=["ops"])
    def healthz(session: DbSession) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok", "service": service}

    return app


def _session(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    """One session per request: committed when the handler returns, rolled back if it raises."""
    with session_scope(settings.sqlalchemy_url) as session:
        yield session


DbSession = Annotated[Session, Depends(_session)]
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
