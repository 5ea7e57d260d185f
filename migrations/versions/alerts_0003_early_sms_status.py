"""alerts: status callbacks that arrive before the sender recorded the message's SID

Revision ID: alerts_0003
Revises: alerts_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "alerts_0003"
down_revision = "alerts_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts_sms_status_early",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=16), nullable=True),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_alerts_sms_status_early")),
    )


def downgrade() -> None:
    op.drop_table("alerts_sms_status_early")
