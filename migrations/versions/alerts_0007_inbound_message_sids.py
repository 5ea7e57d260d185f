"""alerts: inbound SMS deduplicated by MessageSid

Twilio retries a webhook, and a signed one can be replayed: the SID of every inbound SMS
handled is kept (30 days) and a second delivery changes nothing.

Revision ID: alerts_0007
Revises: alerts_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "alerts_0007"
down_revision = "alerts_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts_inbound_messages",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_alerts_inbound_messages")),
    )
    op.create_index(op.f("ix_alerts_inbound_messages_received_at"), "alerts_inbound_messages",
                    ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_inbound_messages_received_at"),
                  table_name="alerts_inbound_messages")
    op.drop_table("alerts_inbound_messages")
