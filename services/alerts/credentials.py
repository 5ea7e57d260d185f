"""Review credentials act once: the alerts service records each used credential's `jti`
in its own table (`alerts_used_credentials`), in a transaction of its own committed before
the action runs, so a captured credential replayed within its lifetime is refused with 401,
whichever alerts API process gets it (the primary key decides between two at once).
Rows whose credential has expired are pruned as new ones are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from services.alerts.models import UsedCredential
from shared.db import session_scope
from shared.officials import LEEWAY_SECONDS, Official
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import AppSettings, require_reviewer


def spend(settings: Settings, official: Official, now: datetime | None = None) -> None:
    """Record `official`'s credential as used; ProblemError(401) when it was used before."""
    now = now or datetime.now(UTC)
    # kept until it could no longer verify (its expiry plus the clocks' leeway)
    keep_until = datetime.fromtimestamp(official.expires_at, UTC) \
        + timedelta(seconds=LEEWAY_SECONDS)
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            session.execute(delete(UsedCredential).where(UsedCredential.expires_at < now))
            session.add(UsedCredential(jti=official.jti, expires_at=keep_until))
    except IntegrityError as exc:
        raise ProblemError(401, "Unauthorized", "This credential was used already: the "
                           "dashboard signs one for each action.",
                           headers={"WWW-Authenticate": "Bearer"}) from exc


def single_use_reviewer(settings: AppSettings,
                        authorization: Annotated[str | None, Header()] = None) -> Official:
    """`require_reviewer`, and the credential is spent."""
    official = require_reviewer(settings, authorization)
    spend(settings, official)
    return official


SingleUseReviewer = Annotated[Official, Depends(single_use_reviewer)]
