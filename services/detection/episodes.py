"""One open signal per (region, kind, substance): the cooldown and escalation gate (pure).

An *episode* opens with the first signal for a key and stays open for the cooldown
(event time). Within it a new signal is emitted only when the severity rises. Signal ids
are uuid5 of (region, kind, substance, episode window, severity), so a replay or a restart
gives the same ids; the trigger's event id is kept so a redelivered trigger (after a crash,
before the offset commit) re-emits the identical signal instead of being swallowed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

NAMESPACE = uuid.UUID("6f4c1c9e-3f0b-5d55-9a4e-2d1f7b0c8a41")
RANK = {"info": 0, "warning": 1, "critical": 2}


def episode_key(region_id: str, kind: str, substance: str) -> str:
    return f"{region_id}|{kind}|{substance}"


def signal_id(key: str, window: str, severity: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{key}|{window}|{severity}")


@dataclass(frozen=True)
class Decision:
    action: Literal["open", "escalate", "replay", "suppress"]
    window: str  # the episode's opening window
    event_id: uuid.UUID | None = None  # the signal's id (open, escalate)
    payload: str | None = None  # the signal as first sent (replay)

    @property
    def emit(self) -> bool:
        return self.action != "suppress"


def decide(state: dict[str, Any] | None, key: str, *, severity: str, at: float, window: str,
           trigger: str, cooldown: float) -> Decision:
    """`state` is the table value for `key` (or None); `at` the event time (epoch seconds),
    `window` the candidate's window, `trigger` the triggering event's id."""
    if state is not None and trigger in state["triggers"]:
        return Decision("replay", state["window"], payload=state["triggers"][trigger])
    if state is None or abs(at - float(state["at"])) >= cooldown:
        return Decision("open", window, signal_id(key, window, severity))
    if RANK[severity] > RANK[state["severity"]]:
        return Decision("escalate", state["window"], signal_id(key, state["window"], severity))
    return Decision("suppress", state["window"])


def record(state: dict[str, Any] | None, decision: Decision, *, severity: str, at: float,
           trigger: str, payload: str) -> dict[str, Any]:
    """The table value after emitting `payload` for an open or escalate decision."""
    if decision.action == "open" or state is None:
        return {"at": at, "window": decision.window, "severity": severity,
                "triggers": {trigger: payload}}
    return {**state, "severity": severity, "triggers": {**state["triggers"], trigger: payload}}
