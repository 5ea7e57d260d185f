"""The performance of the system itself: latencies, review latency, reject rates, alerts per
region per month."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.repository.common import (
    not_canary,
)


@dataclass(frozen=True)
class Latency:
    name: str
    count: int
    p50: timedelta | None
    p90: timedelta | None


@dataclass(frozen=True)
class RejectRate:
    pattern: str
    decided: int
    rejected: int
    rate: float


@dataclass(frozen=True)
class Performance:
    latencies: list[Latency]  # evidence->signal, signal->decision, decision->first SMS, ...
    review_latency: Latency  # draft -> an official's decision (policy approvals left out)
    reject_rates: list[RejectRate]
    alerts_per_region_month: list[tuple[str, str, int]]  # region, "YYYY-MM", alerts


def _latency(name: str, seconds: list[float]) -> Latency:
    if not seconds:
        return Latency(name, 0, None, None)
    ordered = sorted(seconds)

    def q(p: float) -> timedelta:
        return timedelta(seconds=ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)])

    return Latency(name, len(ordered), q(0.5), q(0.9))


def performance(session: Session, now: datetime, days: int = 90) -> Performance:
    since = now - timedelta(days=days)
    alerts = list(session.scalars(select(models.Alert).where(
        not_canary(models.Alert), models.Alert.created_at >= since, models.Alert.kind == "alert")))
    signal_ids = {uuid.UUID(x) for a in alerts for x in a.signal_event_ids or []}
    signals = {s.event_id: s for s in session.scalars(
        select(models.Signal).where(models.Signal.event_id.in_(signal_ids)))} \
        if signal_ids else {}
    evidence_ids = {uuid.UUID(e) for s in signals.values() for e in s.evidence_event_ids or []}
    evidence_at: dict[str, datetime] = {}
    for model in (models.Result, models.Report):
        if evidence_ids:
            for eid, at in session.execute(select(model.event_id, model.published_at)
                                           .where(model.event_id.in_(evidence_ids))):
                evidence_at[str(eid)] = at
    to_signal, to_decision, to_sms, end_to_end, review = [], [], [], [], []
    decided: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    monthly: Counter[tuple[str, str]] = Counter()
    for a in alerts:
        monthly[a.county_id, a.created_at.strftime("%Y-%m")] += 1
        mine = [signals[uuid.UUID(x)] for x in a.signal_event_ids or []
                if uuid.UUID(x) in signals]
        first_signal = min((s.published_at for s in mine), default=None)
        first_evidence = min((evidence_at[e] for s in mine for e in s.evidence_event_ids or []
                              if e in evidence_at), default=None)
        if first_signal and first_evidence:
            to_signal.append((first_signal - first_evidence).total_seconds())
        if a.decided_at and first_signal:
            to_decision.append((a.decided_at - first_signal).total_seconds())
        if a.first_sms_at and a.decided_at:
            to_sms.append((a.first_sms_at - a.decided_at).total_seconds())
        if a.first_sms_at and first_evidence:
            end_to_end.append((a.first_sms_at - first_evidence).total_seconds())
        human = a.decided_by is not None and not a.decided_by.startswith("policy:")
        if a.decided_at and human:
            review.append((a.decided_at - a.created_at).total_seconds())
            pattern = mine[0].pattern if mine else "unknown"
            decided[pattern] += 1
            rejected[pattern] += a.decision == "reject"
    return Performance(
        latencies=[_latency("evidence to signal", to_signal),
                   _latency("signal to decision", to_decision),
                   _latency("decision to first SMS", to_sms),
                   _latency("evidence to first SMS", end_to_end)],
        review_latency=_latency("review", review),
        reject_rates=[RejectRate(p, n, rejected[p], rejected[p] / n)
                      for p, n in sorted(decided.items())],
        alerts_per_region_month=sorted((r, m, n) for (r, m), n in monthly.items()))
