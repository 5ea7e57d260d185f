"""alerts.events.v1: every alert change through the outbox; delivery counts aggregated."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from services.alerts import changes
from services.alerts.models import Delivery, OutboxMessage
from services.alerts.service.fanout import fan_out, finish_if_done
from services.alerts.service.review import approve, edit, get_alert
from services.alerts.service.signals import alert_from_signal
from shared.db import session_scope
from shared.events import AlertChangedV1
from shared.settings import Settings
from shared.topics import ALERT_EVENTS
from testing.alerts_stack import seed_subscribers
from testing.builders import contamination_signal


def alert_events(settings: Settings) -> list[AlertChangedV1]:
    with session_scope(settings.sqlalchemy_url) as session:
        rows = session.scalars(select(OutboxMessage.payload)
                               .where(OutboxMessage.topic == ALERT_EVENTS.name)
                               .order_by(OutboxMessage.id))
        return [AlertChangedV1.model_validate_json(p) for p in rows]


def test_each_change_of_a_draft_is_announced_with_its_state(settings: Settings) -> None:
    seed_subscribers(settings.sqlalchemy_url, settings.secret_key, 3)
    signal = contamination_signal(severity="warning")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, signal)
        alert_id = alert.id
    with session_scope(settings.sqlalchemy_url) as session:
        edit(session, alert_id, "dr-a", {"en": "Fentanyl found in cocaine. Reply STOP"})
    with session_scope(settings.sqlalchemy_url) as session:
        approve(session, alert_id, "dr-b")
    events = alert_events(settings)
    assert [(e.action, e.actor, e.status) for e in events] == [
        ("create", "system", "draft"), ("edit", "dr-a", "draft"), ("approve", "dr-b",
                                                                     "approved")]
    create = events[0]
    assert create.review_reason == "severity"  # LOOKOUT_ENV=test: only critical skips review
    assert create.signal_event_ids == [signal.event_id]
    assert create.audience == 3 and create.deliveries == {}
    assert create.segments == {"en": 1, "es": 2, "fr": 2} and not create.canary
    assert events[1].texts["en"] == "Fentanyl found in cocaine. Reply STOP"
    assert events[2].approved_by == "dr-b" and events[2].approved_at is not None
    assert all(e.alert_id == alert_id for e in events)


def test_a_big_fan_out_makes_few_events(settings: Settings) -> None:
    seed_subscribers(settings.sqlalchemy_url, settings.secret_key, 2500)
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, contamination_signal())
        alert_id = alert.id
        assert fan_out(session, alert) == 2500
    last: dict[uuid.UUID, dict[str, int]] = {}
    ticks = []
    # The dispatcher's ticks while the sender moves deliveries along in big steps.
    for status, count in (("queued", 1000), ("queued", 2500), ("delivered", 2000),
                          (None, 0), ("delivered", 2500)):
        with session_scope(settings.sqlalchemy_url) as session:
            if status is not None:
                ids = select(Delivery.id).where(Delivery.alert_id == alert_id) \
                    .order_by(Delivery.id).limit(count).scalar_subquery()
                session.execute(update(Delivery).where(Delivery.id.in_(ids))
                                .values(status=status))
            ticks.append(changes.publish_delivery_counts(session, last))
    with session_scope(settings.sqlalchemy_url) as session:
        alert = get_alert(session, alert_id)
        assert finish_if_done(session, alert)
        assert alert.status == "sent"
    assert ticks == [1, 1, 1, 0, 1]  # a tick with nothing new announces nothing
    events = alert_events(settings)
    assert len(events) < 10  # 2,500 deliveries, not 2,500 events
    assert [e.action for e in events] == ["create", "sending", "deliveries", "deliveries",
                                          "deliveries", "deliveries", "sent"]
    assert events[1].audience == 2500
    assert events[2].deliveries == {"queued": 1000, "pending": 1500}
    assert events[4].deliveries == {"delivered": 2000, "queued": 500}
    assert events[-1].deliveries == {"delivered": 2500} and events[-1].status == "sent"


def test_a_canary_alert_is_marked(settings: Settings) -> None:
    signal = contamination_signal().model_copy(update={"canary": True})
    with session_scope(settings.sqlalchemy_url) as session:
        alert_from_signal(session, settings, signal)
    (event,) = alert_events(settings)
    assert event.canary and event.kind == "canary" and event.approved_by == "policy:canary"
