"""Alerts agents: signals -> alerts -> one job per subscriber -> the sender."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy import select

from services.alerts import service
from services.alerts.app import app
from services.alerts.models import Delivery
from services.alerts.sender import Sender
from services.alerts.sms import SmsBackend, make_backend
from shared.db import session_scope, utcnow
from shared.events import ContaminationSignalV1, SmsOutboundJobV1, SpikeSignalV1, signal_adapter
from shared.settings import get_settings
from shared.streams import process_each
from shared.topics import SIGNALS, SMS_OUTBOUND

log = logging.getLogger(__name__)
PRODUCER = "alerts"
settings = get_settings()

signals_topic = app.topic(SIGNALS.name, value_serializer="raw", key_serializer="raw",
                          partitions=SIGNALS.partitions)
signals_dlq = app.topic(SIGNALS.dlq, value_serializer="raw", key_serializer="raw",
                        partitions=SIGNALS.partitions)
outbound_topic = app.topic(SMS_OUTBOUND.name, value_serializer="raw", key_serializer="raw",
                           partitions=SMS_OUTBOUND.partitions)
outbound_dlq = app.topic(SMS_OUTBOUND.dlq, value_serializer="raw", key_serializer="raw",
                         partitions=SMS_OUTBOUND.partitions)


def _alert_for(signal: ContaminationSignalV1 | SpikeSignalV1) -> tuple[uuid.UUID, bool]:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = service.alert_from_signal(session, settings, signal)
        created = service.fan_out(session, alert)
        log.info("alert %s (%s, %s): %d deliveries", alert.id, alert.severity, alert.status,
                 created)
        return alert.id, alert.status in ("approved", "sending")


def _pending_page(alert_id: uuid.UUID, after: uuid.UUID | None) -> list[tuple[uuid.UUID,
                                                                             uuid.UUID]]:
    with session_scope(settings.sqlalchemy_url) as session:
        query = (select(Delivery.id, Delivery.subscriber_id)
                 .where(Delivery.alert_id == alert_id, Delivery.status == "pending")
                 .order_by(Delivery.id).limit(service.PAGE_SIZE))
        if after is not None:
            query = query.where(Delivery.id > after)
        return [(d, s) for d, s in session.execute(query).all()]


async def handle_signal(signal: ContaminationSignalV1 | SpikeSignalV1) -> None:
    """Idempotent: a redelivered signal finds its alert and re-sends only pending jobs
    (the sender drops jobs whose delivery is no longer pending)."""
    alert_id, sendable = await asyncio.to_thread(_alert_for, signal)
    if not sendable:
        return
    after: uuid.UUID | None = None
    while page := await asyncio.to_thread(_pending_page, alert_id, after):
        for delivery_id, subscriber_id in page:
            job = SmsOutboundJobV1(producer=PRODUCER, delivery_id=delivery_id,
                                   alert_id=alert_id, subscriber_id=subscriber_id,
                                   created_at=utcnow())
            await outbound_topic.send(key=str(subscriber_id).encode(),
                                      value=job.model_dump_json().encode())
        after = page[-1][0]


def parse_signal(raw: bytes) -> ContaminationSignalV1 | SpikeSignalV1:
    return signal_adapter.validate_json(raw)


@app.agent(signals_topic)
async def alerting(stream: Any) -> None:
    await process_each(stream, service="alerts", agent="alerting", parse=parse_signal,
                       handle=handle_signal, dlq=signals_dlq)


backend: SmsBackend | None = None


@app.agent(outbound_topic, concurrency=1)
async def sending(stream: Any) -> None:
    global backend
    backend = backend or make_backend(settings)
    sender = Sender(settings, backend)
    await process_each(stream, service="alerts", agent="sending",
                       parse=SmsOutboundJobV1.model_validate_json, handle=sender.handle,
                       dlq=outbound_dlq)
