"""Officials' server-side dashboard sessions: started at login, found from the cookie (idle
and absolute expiry), rotated once the second factor is given, ended at logout.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from services.dashboard.account_models import DashboardSession, OfficialAccount
from shared.db import utcnow
from shared.settings import Settings


def token_hash(value: str) -> str:
    """What is stored of a cookie or setup token: its SHA-256, in hex."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class NewSession:
    token: str  # for the cookie; only its hash is stored
    row: DashboardSession


def start_session(session: Session, settings: Settings, account: OfficialAccount,
                  second_factor_ok: bool) -> NewSession:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = DashboardSession(
        token_hash=token_hash(token), official_id=account.id,
        csrf_token=secrets.token_urlsafe(32), second_factor_ok=second_factor_ok,
        created_at=now, last_seen_at=now,
        expires_at=now + timedelta(hours=settings.dashboard_session_absolute_hours))
    session.add(row)
    session.flush()
    return NewSession(token, row)


SEEN_WRITE_INTERVAL = timedelta(seconds=30)  # last_seen_at is written at most this often


def find_session(session: Session, settings: Settings,
                 token: str | None) -> tuple[DashboardSession, OfficialAccount] | None:
    """The live session of this cookie and its account, or None (unknown, ended, idle
    longer than LOOKOUT_DASHBOARD_SESSION_IDLE_MINUTES, past its absolute expiry, or the
    account disabled). Using it counts as activity."""
    if not token:
        return None
    row = session.get(DashboardSession, token_hash(token))
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    idle = timedelta(minutes=settings.dashboard_session_idle_minutes)
    account = session.get(OfficialAccount, row.official_id)
    if row.expires_at <= now or row.last_seen_at + idle <= now or account is None or \
            account.disabled_at is not None:
        row.ended_at = now
        return None
    if now - row.last_seen_at >= SEEN_WRITE_INTERVAL:
        row.last_seen_at = now
    return row, account


def end_session(session: Session, row: DashboardSession) -> None:
    row.ended_at = utcnow()


def rotate_session(session: Session, settings: Settings, row: DashboardSession,
                   account: OfficialAccount) -> NewSession:
    """A new session id once the second factor is given (no fixation across the step)."""
    end_session(session, row)
    new = start_session(session, settings, account, second_factor_ok=True)
    new.row.expires_at = row.expires_at
    return new
