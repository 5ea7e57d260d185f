"""dashboard accounts: officials, sessions, audit log

Revision ID: dashboard_accounts_0001
Revises: 0001
Create Date: 2026-12-02 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "dashboard_accounts_0001"
down_revision = "0001"
branch_labels = ("dashboard_accounts",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_officials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("setup_token_hash", sa.String(length=64), nullable=True),
        sa.Column("setup_expires_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("totp_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_officials")),
        sa.UniqueConstraint("name", name=op.f("uq_dashboard_officials_name")),
        sa.UniqueConstraint("setup_token_hash",
                            name=op.f("uq_dashboard_officials_setup_token_hash")),
    )
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("official_id", sa.Uuid(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("second_factor_ok", sa.Boolean(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["official_id"], ["dashboard_officials.id"],
                                name=op.f("fk_dashboard_sessions_official_id_dashboard_officials")),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_dashboard_sessions")),
    )
    op.create_index(op.f("ix_dashboard_sessions_official_id"), "dashboard_sessions",
                    ["official_id"], unique=False)
    op.create_table(
        "dashboard_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("official_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_audit")),
    )
    op.create_index(op.f("ix_dashboard_audit_at"), "dashboard_audit", ["at"], unique=False)
    op.create_index(op.f("ix_dashboard_audit_official_id"), "dashboard_audit",
                    ["official_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dashboard_audit_official_id"), table_name="dashboard_audit")
    op.drop_index(op.f("ix_dashboard_audit_at"), table_name="dashboard_audit")
    op.drop_table("dashboard_audit")
    op.drop_index(op.f("ix_dashboard_sessions_official_id"), table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_table("dashboard_officials")
