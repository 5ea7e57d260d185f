"""referrals: a language may belong to a phone (HSDS language.phone_id)

Revision ID: referrals_0005
Revises: referrals_0004
Create Date: 2026-12-02 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referrals_0005"
down_revision = "referrals_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals_languages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals_languages", schema=None) as batch_op:
        batch_op.drop_column("phone_id")
