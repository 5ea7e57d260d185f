"""relay: the broker epoch of each outbox table

Revision ID: relay_0001
Revises: 0001
Create Date: 2026-12-02 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "relay_0001"
down_revision = "0001"
branch_labels = ("relay",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_epochs",
        sa.Column("table_name", sa.String(length=120), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("started_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name=op.f("pk_relay_epochs")),
    )


def downgrade() -> None:
    op.drop_table("relay_epochs")
