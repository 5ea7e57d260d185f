"""alerts: deliveries indexed by (alert, status, id)

The pages of an alert's pending deliveries and "is anything of this alert still pending"
(every second during a fan-out) were a sort or a scan over all 100,000 rows of a large
alert; with this index both are a range read.

Revision ID: alerts_0004
Revises: alerts_0003
"""

from __future__ import annotations

from alembic import op

revision = "alerts_0004"
down_revision = "alerts_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alerts_deliveries_alert_status_id", "alerts_deliveries",
                    ["alert_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_deliveries_alert_status_id", table_name="alerts_deliveries")
