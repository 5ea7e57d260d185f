"""dashboard accounts: saved views (an official's named filters of a page)

Revision ID: dashboard_accounts_0002
Revises: dashboard_accounts_0001
Create Date: 2026-12-02 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "dashboard_accounts_0002"
down_revision = "dashboard_accounts_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_saved_views",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("official_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("page", sa.String(length=16), nullable=False),
        sa.Column("query", sa.String(length=500), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["official_id"], ["dashboard_officials.id"],
            name=op.f("fk_dashboard_saved_views_official_id_dashboard_officials")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dashboard_saved_views")),
        sa.UniqueConstraint("official_id", "name",
                            name=op.f("uq_dashboard_saved_views_official_id_name")),
    )
    op.create_index(op.f("ix_dashboard_saved_views_official_id"), "dashboard_saved_views",
                    ["official_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dashboard_saved_views_official_id"),
                  table_name="dashboard_saved_views")
    op.drop_table("dashboard_saved_views")
