"""A stream handler that fails is retried with backoff, then its message dead-lettered
(shared.streams.handle_with_retries); a broker that never answers times out
(shared.kafka.wait_for_broker)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from shared import kafka
from shared.streams import HANDLER_ATTEMPTS, handle_with_retries


@dataclass
class _Message:
    topic: str = "drugcheck.results.v1"
    partition: int = 0
    offset: int = 7
    key: bytes = b"k"


class _Dlq:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **record: Any) -> None:
        self.sent.append(record)


def _handler(failures: int) -> tuple[list[str], Any]:
    calls: list[str] = []

    async def handle(parsed: str) -> None:
        calls.append(parsed)
        if len(calls) <= failures:
            raise RuntimeError(f"failure {len(calls)}")

    return calls, handle


def test_a_handler_that_recovers_is_not_dead_lettered() -> None:
    calls, handle = _handler(failures=HANDLER_ATTEMPTS - 1)
    dlq = _Dlq()
    started = time.monotonic()
    asyncio.run(handle_with_retries(_Message(), b"{}", "event", service="test", agent="a",
                                    handle=handle, dlq=dlq))
    assert calls == ["event"] * HANDLER_ATTEMPTS
    assert dlq.sent == []
    assert time.monotonic() - started >= 0.4 * (2 ** (HANDLER_ATTEMPTS - 1) - 1) - 0.05


def test_a_handler_that_keeps_failing_is_dead_lettered_once() -> None:
    calls, handle = _handler(failures=HANDLER_ATTEMPTS)
    dlq = _Dlq()
    asyncio.run(handle_with_retries(_Message(), b'{"x": 1}', "event", service="test",
                                    agent="a", handle=handle, dlq=dlq))
    assert calls == ["event"] * HANDLER_ATTEMPTS
    assert len(dlq.sent) == 1 and dlq.sent[0]["value"] == b'{"x": 1}'
    headers = dlq.sent[0]["headers"]
    assert f"failure {HANDLER_ATTEMPTS}" in headers["lookout-error"].decode()
    assert headers["lookout-source"] == b"drugcheck.results.v1:0:7"


def test_waiting_for_a_broker_that_never_answers_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    async def never(bootstrap: str, security: Any = None) -> bool:
        asked.append(bootstrap)
        return False

    monkeypatch.setattr(kafka, "broker_answers", never)
    with pytest.raises(TimeoutError, match="no Kafka broker answered"):
        asyncio.run(kafka.wait_for_broker("127.0.0.1:1", within=0.5))
    assert 2 <= len(asked) <= 5


def test_waiting_for_a_broker_returns_once_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([False, False, True])

    async def later(bootstrap: str, security: Any = None) -> bool:
        return next(answers)

    monkeypatch.setattr(kafka, "broker_answers", later)
    asyncio.run(kafka.wait_for_broker("127.0.0.1:1", within=5))
    assert next(answers, None) is None
