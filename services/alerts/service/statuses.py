"""Provider status callbacks: a delivery only moves forward, and a callback that beats
the sender's record is kept until a delivery holds its SID."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.alerts.models import Delivery, EarlyStatus
from services.alerts.service.common import PAGE_SIZE
from shared.db import utcnow

# A delivery only moves forward: callbacks can come out of order.
STATUS_RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3,
               "failed": 3}
EARLY_STATUS_DAYS = 1  # a callback no delivery claims within this is dropped


def record_status(session: Session, sid: str, status: str, error_code: str | None) -> str:
    """Apply a provider status callback to the delivery holding `sid`: "applied", "stale"
    (the delivery is already as far or further), or "early" (no delivery holds the SID yet:
    the callback beat the sender's record; kept in `alerts_sms_status_early` for
    `apply_early_statuses`). Writes first, so on SQLite the transaction holds the write lock
    before it reads."""
    rank = STATUS_RANK.get(status, -1)
    later_or_same = [s for s, r in STATUS_RANK.items() if r <= rank]
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if error_code:
        values["error_code"] = error_code
    changed = session.execute(
        update(Delivery).where(Delivery.provider_sid == sid,
                               Delivery.status.in_(later_or_same))
        .values(**values).returning(Delivery.id)
        .execution_options(synchronize_session=False)).first()
    if changed is not None:
        return "applied"
    if session.scalar(select(Delivery.id).where(Delivery.provider_sid == sid).limit(1)):
        return "stale"
    early = session.get(EarlyStatus, sid)
    if early is None:
        session.add(EarlyStatus(sid=sid, status=status, error_code=error_code,
                                received_at=utcnow()))
    elif rank >= STATUS_RANK.get(early.status, -1):
        early.status = status
        early.error_code = error_code or early.error_code
    return "early"


def apply_early_statuses(session: Session) -> int:
    """Callbacks kept for SIDs that deliveries now hold are applied and deleted; those older
    than EARLY_STATUS_DAYS are deleted (not ours, e.g. another app on the account)."""
    rows = session.execute(
        select(EarlyStatus.sid, EarlyStatus.status, EarlyStatus.error_code)
        .join(Delivery, Delivery.provider_sid == EarlyStatus.sid).limit(PAGE_SIZE)).all()
    for sid, status, error_code in rows:
        record_status(session, sid, status, error_code)
    if rows:
        session.execute(delete(EarlyStatus).where(EarlyStatus.sid.in_([r[0] for r in rows])))
    session.execute(delete(EarlyStatus).where(
        EarlyStatus.received_at < utcnow() - timedelta(days=EARLY_STATUS_DAYS)))
    return len(rows)
