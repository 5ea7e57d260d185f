"""The relay's backoff while the broker is away (shared.relay): doubling from 0.2 s up to
10 s, with up to half again of jitter."""

from __future__ import annotations

from tenacity import RetryCallState

from shared.relay import FIRST_BACKOFF, MAX_BACKOFF, _backoff, _base_backoff


def _state(attempt: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return state


def test_the_backoff_doubles_up_to_the_max() -> None:
    assert FIRST_BACKOFF == 0.2 and MAX_BACKOFF == 10.0
    bases = [_base_backoff(_state(n)) for n in range(1, 10)]
    assert bases == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]


def test_the_jitter_adds_up_to_half() -> None:
    waits: list[float] = [_backoff(_state(3)) for _ in range(200)]
    assert all(0.8 <= w <= 1.2 for w in waits)
    assert max(waits) - min(waits) > 0.1  # not a constant
