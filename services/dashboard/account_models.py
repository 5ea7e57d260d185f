"""Tables of the dashboard's accounts (prefix `dashboard_`): officials, their sessions, their
saved views and the dashboard's audit log. The read model's tables live apart
(dashboard_0001 chain)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow


class OfficialAccount(Base):
    """An official's account: role (viewer, reviewer, admin) and region prefixes.

    The password is an Argon2 hash (pwdlib); until it is set, a one-time setup link (only
    its SHA-256 kept) lets the official choose it. The TOTP secret is stored encrypted."""

    __tablename__ = "dashboard_officials"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    setup_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    setup_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    totp_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(Integer)  # a code is used once
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardSession(Base):
    """A signed-in browser: the cookie holds a random token, the table its SHA-256. Ends
    when idle too long, at its absolute expiry, at logout or when the account is disabled.
    `second_factor_ok`: the TOTP code was given (or none is needed)."""

    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    official_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dashboard_officials.id"),
                                                   index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    second_factor_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DashboardAudit(Base):
    """Every login, failure, logout, account change and review action taken from the
    dashboard: who (the verified official, or the name typed at a failed login), what, on
    what, the outcome and the client's address."""

    __tablename__ = "dashboard_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    official_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))  # ok / failed / refused / error
    client: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SavedView(Base):
    """An official's saved filters of one page (ESSENCE's "saved views"): the page's key
    (trends, supply, map) and its query string limited to the page's filter keys, never a
    URL. Names are unique per account."""

    __tablename__ = "dashboard_saved_views"
    __table_args__ = (UniqueConstraint("official_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    official_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dashboard_officials.id"),
                                                   index=True)
    name: Mapped[str] = mapped_column(String(60))
    page: Mapped[str] = mapped_column(String(16))
    query: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
