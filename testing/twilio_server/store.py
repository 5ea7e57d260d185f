"""The fake Twilio account's state: messages, opt-outs, injected faults, fail rules, the
callback log and counters, behind one lock."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from testing.twilio_server.catalog import (
    API_VERSION,
    CALLBACK_LOG_SIZE,
    DELIVERY_ERRORS,
    FAULT_DEFAULTS,
    DeliveryStatus,
)
from testing.twilio_server.segments import rfc2822


@dataclass(frozen=True)
class FailRule:
    """Messages whose ``To`` ends with ``suffix`` end in ``status`` with ``error_code``."""

    suffix: str
    error_code: int = 30003
    status: DeliveryStatus = "undelivered"


def _by_suffix_length(rules: Iterable[FailRule]) -> list[FailRule]:
    return sorted(rules, key=lambda r: len(r.suffix), reverse=True)  # most specific first


@dataclass
class Fault:
    status: int
    remaining: int
    code: int
    message: str
    retry_after: float | None = None


@dataclass(slots=True, eq=False)
class Message:
    sid: str
    to: str
    from_: str | None
    body: str
    status: str
    num_segments: int
    num_media: int
    messaging_service_sid: str | None
    status_callback: str | None
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    final: FailRule | None = None
    uri: str = ""

    def resource(self, account_sid: str) -> dict[str, Any]:
        accepted = self.status == "accepted"  # Messaging Service has not picked a sender yet
        return {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": rfc2822(self.date_created),
            "date_sent": rfc2822(self.date_sent) if self.date_sent else None,
            "date_updated": rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_ if not accepted else None,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(self.num_media),
            "num_segments": "0" if accepted else str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": self.uri[: -len(".json")] + "/Media.json"},
            "to": self.to,
            "uri": self.uri,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": self.num_segments,
            "created": self.date_created.isoformat(),
            "error_code": self.error_code,
            "messaging_service_sid": self.messaging_service_sid,
            "status_callback": self.status_callback,
        }


@dataclass(eq=False)
class MessageStore:
    """In-memory state of one fake Twilio account. Mutators take ``lock`` so test code in
    another thread can use them while uvicorn serves."""

    account_sid: str
    auth_token: str
    callback_delay: float = 0.05
    initial_fail_rules: tuple[FailRule, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _messages: dict[str, Message] = field(default_factory=dict, repr=False)
    _opted_out: set[str] = field(default_factory=set, repr=False)
    _faults: list[Fault] = field(default_factory=list, repr=False)
    _fail_rules: list[FailRule] = field(default_factory=list, repr=False)
    _callbacks: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=CALLBACK_LOG_SIZE), repr=False
    )
    _stats: Counter[str] = field(default_factory=Counter, repr=False)

    def __post_init__(self) -> None:
        self._fail_rules = _by_suffix_length(self.initial_fail_rules)

    # ---- control API (thread-safe) -----------------------------------------------------

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [m.summary() for m in self._messages.values() if to is None or m.to == to]

    def message_count(self) -> int:
        """len(messages()) without copying them: for polling while thousands arrive."""
        with self.lock:
            return len(self._messages)

    def callbacks(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._callbacks)

    def stats(self) -> dict[str, int]:
        """Counters: accepted, rejected.<code>, fault.<status>, auth_failed, callback.ok|error."""
        with self.lock:
            return dict(self._stats)

    def clear_messages(self) -> int:
        with self.lock:
            n = len(self._messages)
            self._messages.clear()
            self._callbacks.clear()
            self._stats.clear()
            return n

    def opt_out(self, number: str) -> None:
        with self.lock:
            self._opted_out.add(number)

    def opt_in(self, number: str) -> None:
        with self.lock:
            self._opted_out.discard(number)

    def add_fault(
        self,
        status: int,
        count: int = 1,
        *,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``count`` Twilio API requests fail with HTTP ``status``."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError("fault status must be 4xx/5xx and count >= 1")
        default_code, default_message = FAULT_DEFAULTS.get(status, (20000 + status, "Error"))
        fault = Fault(status, count, code or default_code, message or default_message, retry_after)
        with self.lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def add_fail_rule(self, rule: FailRule) -> None:
        with self.lock:  # swap in a new list: the event loop iterates it without the lock
            self._fail_rules = _by_suffix_length([*self._fail_rules, rule])

    def clear_fail_rules(self) -> None:
        with self.lock:
            self._fail_rules = []

    def reset(self) -> None:
        with self.lock:
            self._messages.clear()
            self._callbacks.clear()
            self._stats.clear()
            self._opted_out.clear()
            self._faults.clear()
            self._fail_rules = _by_suffix_length(self.initial_fail_rules)

    # ---- helpers ---------------------------------------------------------------------------

    def take_fault(self) -> Fault | None:
        if not self._faults:  # fast path, no lock
            return None
        with self.lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def fail_rule_for(self, to: str) -> FailRule | None:
        for rule in self._fail_rules:
            if to.endswith(rule.suffix):
                return rule
        return None

    def holds(self, sid: str) -> bool:
        """Still there (not deleted, not reset)."""
        return sid in self._messages

    def advance(self, msg: Message, status: str) -> None:
        """The message's next status (its error, once it has failed)."""
        now = datetime.now(UTC)
        with self.lock:
            msg.status = status
            msg.date_updated = now
            if status == "sent" or (status == "delivered" and msg.date_sent is None):
                msg.date_sent = now
            if status in ("undelivered", "failed") and msg.final is not None:
                msg.error_code = msg.final.error_code
                msg.error_message = DELIVERY_ERRORS.get(msg.final.error_code)

    def log_callback(self, record: dict[str, Any], outcome: str) -> None:
        with self.lock:
            self._callbacks.append(record)
            self._stats[f"callback.{outcome}"] += 1
