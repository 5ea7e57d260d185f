"""alerts: signup requests apart from contacts, and rate windows

A web signup is a request of its own until its code confirms it (the contact's areas,
language and status change only then; the page holds the request's id, not the contact's).
Rate windows count signup codes per client and in all, across processes.

Revision ID: alerts_0006
Revises: alerts_0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "alerts_0006"
down_revision = "alerts_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts_signup_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("phone_encrypted", sa.Text(), nullable=False),
        sa.Column("region_id", sa.String(120), nullable=False),
        sa.Column("language", sa.String(5), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts_signup_requests")),
    )
    op.create_index(op.f("ix_alerts_signup_requests_phone_hash"), "alerts_signup_requests",
                    ["phone_hash"])
    op.create_index(op.f("ix_alerts_signup_requests_created_at"), "alerts_signup_requests",
                    ["created_at"])
    op.create_table(
        "alerts_rate_windows",
        sa.Column("key", sa.String(120), nullable=False),
        sa.Column("window_start", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_alerts_rate_windows")),
    )


def downgrade() -> None:
    op.drop_table("alerts_rate_windows")
    op.drop_index(op.f("ix_alerts_signup_requests_created_at"),
                  table_name="alerts_signup_requests")
    op.drop_index(op.f("ix_alerts_signup_requests_phone_hash"),
                  table_name="alerts_signup_requests")
    op.drop_table("alerts_signup_requests")
