"""alerts: deliveries indexed by subscriber

A contact's data export and erasure (which skips its pending deliveries) select deliveries
by subscriber; the unique key (alert_id, subscriber_id) leads with the alert, so each was a
scan of every delivery ever made.

Revision ID: alerts_0005
Revises: alerts_0004
"""

from __future__ import annotations

from alembic import op

revision = "alerts_0005"
down_revision = "alerts_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_deliveries_subscriber_id", "alerts_deliveries",
                    ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_deliveries_subscriber_id", table_name="alerts_deliveries")
