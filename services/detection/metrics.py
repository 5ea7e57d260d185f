"""Detection metrics (prefix lookout_detection_)."""

from __future__ import annotations

from prometheus_client import Counter

LATE_EVENTS = Counter(
    "lookout_detection_late_events_total",
    "Events older than the grace period behind their region's newest bucket (not counted)",
    ["agent"],
)
SIGNALS = Counter(
    "lookout_detection_signals_total",
    "Signals sent to signals.v1 by kind and pattern (replays of a redelivered trigger count)",
    ["kind", "pattern"],
)
SUPPRESSED = Counter(
    "lookout_detection_suppressed_total",
    "Signal candidates held back because an episode is open and did not escalate",
    ["kind", "pattern"],
)
