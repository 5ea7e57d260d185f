"""Ingest's own metrics: submissions by kind, outcome and a fixed, small set of reasons."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Literal

from prometheus_client import Counter

Kind = Literal["drug_check", "overdose_report"]
# The only reason values (a fixed label set): `none` for accepted and duplicate items.
REASONS = ("none", "validation", "location", "conflict", "malformed", "too_large",
           "rate_limited", "unauthorized", "forbidden")

SUBMISSIONS = Counter(
    "lookout_ingest_submissions_total",
    "Submitted items by kind (drug_check, overdose_report), outcome (accepted, duplicate, "
    "rejected) and reason",
    ["kind", "outcome", "reason"],
)


def count(kind: Kind, outcome: str, reason: str | None = None, n: int = 1) -> None:
    reason = reason or "none"
    if reason not in REASONS:
        reason = "validation"
    SUBMISSIONS.labels(kind, outcome, reason).inc(n)


def count_outcomes(kind: Kind, outcomes: Iterable[tuple[str, str | None]]) -> None:
    """Count many items' (outcome, reason) pairs: one increment per distinct pair."""
    for (outcome, reason), n in collections.Counter(outcomes).items():
        count(kind, outcome, reason, n)
