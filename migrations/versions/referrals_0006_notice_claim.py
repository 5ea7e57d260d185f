"""referrals: the provider notice is claimed before it is sent (one sender per notice)

Revision ID: referrals_0006
Revises: referrals_0005
Create Date: 2026-12-02 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import shared.db

revision = "referrals_0006"
down_revision = "referrals_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referrals_referrals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notice_claimed_at", shared.db.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals_referrals", schema=None) as batch_op:
        batch_op.drop_column("notice_claimed_at")
