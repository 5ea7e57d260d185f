"""The worker's handlers in-process with an injected clock and notifier: the hand-off in two
transactions, the timer's follow-up, a hand-off retried after the worker stopped, and a
notice claimed by a sender that died, sent once its claim is stale."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest

from services.referrals import agents, service
from services.referrals.notify import FakeNotifier
from shared.db import session_scope
from shared.settings import Settings
from tests.referrals.helpers import TUESDAY_10AM, load_directory, reply, requested, statuses


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def worker(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, FakeNotifier]:
    load_directory(settings.sqlalchemy_url)
    clock, notifier = Clock(TUESDAY_10AM), FakeNotifier()
    monkeypatch.setattr(agents, "settings", settings)
    monkeypatch.setattr(agents, "clock", clock)
    monkeypatch.setattr(agents, "notifier", notifier)
    return clock, notifier


def test_handlers_and_timer_with_simulated_time(settings: Settings,
                                                worker: tuple[Clock, FakeNotifier]) -> None:
    clock, notifier = worker
    contact = uuid.uuid4()
    asyncio.run(agents.handle_request(requested(contact)))
    clock.now += timedelta(minutes=2)
    asyncio.run(agents.handle_reply(reply(contact, "1", clock.now)))
    agents.notices.join()  # the notice goes off the conversation's path
    assert [n["service_id"] for _c, _a, n in notifier.sent] == ["svc-harbor-bup"]
    assert statuses(settings.sqlalchemy_url)[-1] == "provider_notified"

    clock.now += timedelta(hours=1)
    assert agents.run_tick() == {"followups": 0, "no_response": 0, "purged": 0}
    clock.now += timedelta(seconds=settings.referrals_followup_delay_seconds)
    assert agents.run_tick()["followups"] == 1
    clock.now += timedelta(days=settings.referrals_retention_days)
    assert agents.run_tick()["purged"] == 1


def test_a_choice_whose_notice_was_never_recorded_is_retried(
        settings: Settings, worker: tuple[Clock, FakeNotifier]) -> None:
    clock, notifier = worker
    contact = uuid.uuid4()
    asyncio.run(agents.handle_request(requested(contact)))
    with session_scope(settings.sqlalchemy_url) as session:  # the worker dies after this
        assert service.handle_reply(session, settings, reply(contact, "1"), clock.now)
    assert notifier.sent == []
    clock.now += timedelta(seconds=30)
    agents.run_tick()
    assert notifier.sent == []  # not yet: it may still be in flight
    clock.now += timedelta(minutes=2)
    agents.run_tick()
    assert [n["service_id"] for _c, _a, n in notifier.sent] == ["svc-harbor-bup"]
    assert statuses(settings.sqlalchemy_url)[-1] == "provider_notified"
    agents.run_tick()
    assert len(notifier.sent) == 1  # once
    assert statuses(settings.sqlalchemy_url).count("provider_notified") == 1


def test_a_notice_claimed_by_a_sender_that_died_is_sent_once_the_claim_is_stale(
        settings: Settings, worker: tuple[Clock, FakeNotifier]) -> None:
    clock, notifier = worker
    contact = uuid.uuid4()
    asyncio.run(agents.handle_request(requested(contact)))
    with session_scope(settings.sqlalchemy_url) as session:
        handoff = service.handle_reply(session, settings, reply(contact, "1"), clock.now)
        assert handoff is not None
    clock.now += timedelta(minutes=2)
    with session_scope(settings.sqlalchemy_url) as session:  # claimed, then the sender died
        assert service.claim_notice(session, handoff, clock.now)
    with session_scope(settings.sqlalchemy_url) as session:  # a second claim loses
        assert not service.claim_notice(session, handoff, clock.now)
    assert agents.run_hand_off(handoff) is None
    clock.now += timedelta(seconds=30)
    agents.run_tick()
    assert notifier.sent == []  # the claim is fresh: its sender may still be sending
    clock.now += timedelta(seconds=service.NOTICE_STALE_SECONDS)
    agents.run_tick()
    assert [n["service_id"] for _c, _a, n in notifier.sent] == ["svc-harbor-bup"]
    assert statuses(settings.sqlalchemy_url)[-1] == "provider_notified"
    clock.now += timedelta(minutes=5)
    agents.run_tick()
    assert agents.run_hand_off(handoff) is None  # recorded: never claimed again
    assert len(notifier.sent) == 1
