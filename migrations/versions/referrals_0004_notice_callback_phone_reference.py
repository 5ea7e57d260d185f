"""referrals: provider notices keep a reference to the callback phone, not the number

Revision ID: referrals_0004
Revises: referrals_0003
Create Date: 2026-12-02 13:15:00

The number stays only Fernet-encrypted on the referral (`callback_phone_encrypted`); a
notice's stored payload names it (`callback_phone_ref`). Existing payloads lose the number
in clear. There is no way back: the downgrade keeps the references.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referrals_0004"
down_revision = "referrals_0003"
branch_labels = None
depends_on = None

REFERENCE = "referral.callback_phone_encrypted"  # services.referrals.service.handoff.PHONE_REFERENCE


def upgrade() -> None:
    notices = sa.table("referrals_provider_notices", sa.column("id", sa.Uuid()),
                       sa.column("payload", sa.JSON()))
    bind = op.get_bind()
    for row_id, payload in bind.execute(sa.select(notices.c.id, notices.c.payload)).all():
        if isinstance(payload, dict) and "callback_phone" in payload:
            kept = {k: v for k, v in payload.items() if k != "callback_phone"}
            kept["callback_phone_ref"] = REFERENCE
            bind.execute(notices.update().where(notices.c.id == row_id).values(payload=kept))


def downgrade() -> None:
    pass
