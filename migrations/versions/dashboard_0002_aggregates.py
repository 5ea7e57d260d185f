"""dashboard read model aggregates: regions, reports and samples per day

Revision ID: dashboard_0002
Revises: dashboard_0001
Create Date: 2026-12-02 17:45:00

Counted by the consumer as events are applied (services/dashboard/aggregates.py). A read
model upgraded from dashboard_0001 starts them empty: `lookout dashboard rebuild` fills
them from the topics.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "dashboard_0002"
down_revision = "dashboard_0001"
branch_labels = None
depends_on = None


def _region_columns() -> list[sa.Column]:
    return [sa.Column("county_id", sa.String(length=120), nullable=False),
            sa.Column("state_id", sa.String(length=60), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "dashboard_regions",
        sa.Column("region_id", sa.String(length=120), nullable=False),
        sa.Column("region_name", sa.String(length=200), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("region_id", name=op.f("pk_dashboard_regions")),
    )
    op.create_table(
        "dashboard_report_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region_id", sa.String(length=120), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("fatal", sa.String(length=8), nullable=False),
        *_region_columns(),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region_id", "source", "fatal",
                                name=op.f("pk_dashboard_report_days")),
    )
    op.create_index("ix_dashboard_report_days_state_day", "dashboard_report_days",
                    ["state_id", "day"])
    op.create_index("ix_dashboard_report_days_county_day", "dashboard_report_days",
                    ["county_id", "day"])
    op.create_table(
        "dashboard_sample_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region_id", sa.String(length=120), nullable=False),
        sa.Column("sold_as_id", sa.String(length=80), nullable=False),
        *_region_columns(),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("high_risk", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region_id", "sold_as_id",
                                name=op.f("pk_dashboard_sample_days")),
    )
    op.create_index("ix_dashboard_sample_days_state_day", "dashboard_sample_days",
                    ["state_id", "day"])
    op.create_index("ix_dashboard_sample_days_county_day", "dashboard_sample_days",
                    ["county_id", "day"])
    op.create_table(
        "dashboard_found_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("region_id", sa.String(length=120), nullable=False),
        sa.Column("sold_as_id", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("substance_id", sa.String(length=80), nullable=False),
        sa.Column("high_risk", sa.Boolean(), nullable=False),
        *_region_columns(),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "region_id", "sold_as_id", "name", "substance_id",
                                name=op.f("pk_dashboard_found_days")),
    )
    op.create_index("ix_dashboard_found_days_state_day", "dashboard_found_days",
                    ["state_id", "day"])
    op.create_index("ix_dashboard_found_days_county_day", "dashboard_found_days",
                    ["county_id", "day"])


def downgrade() -> None:
    for table in ("dashboard_found_days", "dashboard_sample_days", "dashboard_report_days"):
        op.drop_index(f"ix_{table}_county_day", table_name=table)
        op.drop_index(f"ix_{table}_state_day", table_name=table)
        op.drop_table(table)
    op.drop_table("dashboard_regions")
