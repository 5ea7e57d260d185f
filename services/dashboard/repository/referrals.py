"""Referrals: the status funnel and the median time to connected."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.repository.common import (
    within,
)

FUNNEL_STEPS = ("requested", "options_sent", "chosen", "provider_notified", "connected")
OUTCOMES = ("declined", "no_response", "stopped")


@dataclass(frozen=True)
class ReferralFunnel:
    total: int
    steps: list[tuple[str, int]]  # each status of the path and how many referrals reached it
    outcomes: list[tuple[str, int]]  # referrals whose current status is each ending
    median_to_connected: timedelta | None
    by_status: dict[str, int]


def referrals_funnel(session: Session, now: datetime, days: int = 90,
                     region_id: str | None = None) -> ReferralFunnel:
    since = now - timedelta(days=days)
    rows = list(session.scalars(select(models.Referral).where(
        or_(models.Referral.requested_at >= since, models.Referral.updated_at >= since),
        within(region_id, models.Referral.region_id))))
    reached: Counter[str] = Counter()
    for r in rows:
        reached.update(set(r.reached or []))
    waits = [(r.connected_at - r.requested_at).total_seconds() for r in rows
             if r.connected_at and r.requested_at]
    return ReferralFunnel(
        total=len(rows), steps=[(s, reached[s]) for s in FUNNEL_STEPS],
        outcomes=[(s, sum(1 for r in rows if r.status == s)) for s in OUTCOMES],
        median_to_connected=timedelta(seconds=statistics.median(waits)) if waits else None,
        by_status=dict(Counter(r.status for r in rows)))
