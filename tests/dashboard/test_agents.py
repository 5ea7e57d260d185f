"""The dashboard worker's batches (services/dashboard/agents.py): a batch that fails is
applied again one record at a time; the record that keeps failing is retried, then
dead-lettered to its topic's DLQ, and the others land."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import func, select

from services.dashboard import agents, consumer, models
from shared.db import session_scope
from shared.settings import Settings
from shared.streams import HANDLER_ATTEMPTS
from tests.dashboard.events import records, story


@dataclass
class _Message:
    topic: str
    timestamp: float  # seconds, as Faust gives it
    offset: int
    key: bytes = b"k"
    partition: int = 0


@dataclass
class _Event:
    value: bytes
    message: _Message


class _Dlq:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **record: Any) -> None:
        self.sent.append(record)


def test_a_record_that_keeps_failing_is_dead_lettered_and_the_others_land(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = records(story())
    bad_record, bad_event = items[-1]
    bad_id = bad_event.event_id  # type: ignore[attr-defined]
    real_apply = consumer.apply_batch
    tried_bad: list[int] = []

    def apply(url: str, batch: list[tuple[consumer.Record, BaseModel]],
              changes: bool = True) -> int:
        if any(event.event_id == bad_id for _r, event in batch):  # type: ignore[attr-defined]
            tried_bad.append(len(batch))
            raise RuntimeError("the database refused it")
        return real_apply(url, batch, changes)

    monkeypatch.setattr(consumer, "apply_batch", apply)
    monkeypatch.setattr(agents, "settings", settings)
    dlqs = {topic: _Dlq() for topic in agents.dead_letters}
    for topic, dlq in dlqs.items():
        monkeypatch.setitem(agents.dead_letters, topic, dlq)
    events = [_Event(record.value, _Message(record.topic, record.timestamp.timestamp(), i))
              for i, (record, _event) in enumerate(items)]

    asyncio.run(agents.handle_events(events))

    assert tried_bad == [len(items)] + [1] * HANDLER_ATTEMPTS
    sent = {topic: dlq.sent for topic, dlq in dlqs.items() if dlq.sent}
    assert list(sent) == [bad_record.topic] and len(sent[bad_record.topic]) == 1
    dead = sent[bad_record.topic][0]
    assert dead["value"] == bad_record.value
    assert b"handler failed: RuntimeError('the database refused it')" in \
        dead["headers"]["lookout-error"]
    with session_scope(settings.sqlalchemy_url) as session:
        applied = session.scalar(select(func.count()).select_from(models.ProcessedEvent))
    assert applied == len(items) - 1
