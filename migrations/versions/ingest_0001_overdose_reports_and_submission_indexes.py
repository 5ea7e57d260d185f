"""ingest: overdose reports, per-site submission indexes

Revision ID: ingest_0001
Revises: 0001
Create Date: 2026-11-23 02:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "ingest_0001"
down_revision = "0001"
branch_labels = ("ingest",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_overdose_reports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=160), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("region_id", sa.String(length=120), nullable=False),
        sa.Column("received_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["ingest_sites.id"],
            name=op.f("fk_ingest_overdose_reports_site_id_ingest_sites"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_overdose_reports")),
        sa.UniqueConstraint("event_id", name=op.f("uq_ingest_overdose_reports_event_id")),
        sa.UniqueConstraint(
            "site_id", "idempotency_key",
            name=op.f("uq_ingest_overdose_reports_site_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("ingest_overdose_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ingest_overdose_reports_region_id"), ["region_id"], unique=False
        )
        batch_op.create_index(
            "ix_ingest_overdose_reports_site_received",
            ["site_id", "received_at", "id"], unique=False,
        )
    with op.batch_alter_table("ingest_drug_checks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ingest_drug_checks_site_received", ["site_id", "received_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("ingest_drug_checks", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_drug_checks_site_received")
    with op.batch_alter_table("ingest_overdose_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_overdose_reports_site_received")
        batch_op.drop_index(batch_op.f("ix_ingest_overdose_reports_region_id"))
    op.drop_table("ingest_overdose_reports")
