"""alerts: review credentials already used (single use, by jti)

Revision ID: alerts_0008
Revises: alerts_0007
Create Date: 2026-12-02 18:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "alerts_0008"
down_revision = "alerts_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts_used_credentials",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_alerts_used_credentials")),
    )
    op.create_index(op.f("ix_alerts_used_credentials_expires_at"), "alerts_used_credentials",
                    ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_used_credentials_expires_at"),
                  table_name="alerts_used_credentials")
    op.drop_table("alerts_used_credentials")
