"""Alerts agents (the worker process):

- `alerting`: signals -> alert (new or merged) -> fan-out when approved -> one job per
  subscriber on `sms.outbound.v1` (key subscriber);
- `dispatch` timer: alerts approved through the API are fanned out; due alerts expire;
  finished ones are marked sent; deliveries stuck in `sending` after a crash are reconciled;
- `sending`: jobs (a plain aiokafka consumer, group `lookout-alerts-sender`) -> the sender
  (token bucket, STOP at send time, a bounded number of sends in flight; each delivery is
  claimed once, so a redelivered job sends nothing);
- `requesting`: `sms.requests.v1` (texts other services ask for, e.g. referrals) -> one
  delivery keyed by the request's event id -> the same sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_fixed,
    wait_incrementing,
)

from services.alerts import changes, repository
from services.alerts.app import app as app  # re-exported: `lookout worker alerts` runs it
from services.alerts.models import Alert
from services.alerts.sender import Sender
from services.alerts.service.common import PAGE_SIZE
from services.alerts.service.fanout import expire_if_due, fan_out_page, finish_if_done
from services.alerts.service.requests import request_delivery
from services.alerts.service.signals import alert_from_signal
from services.alerts.service.statuses import apply_early_statuses
from services.alerts.sms import SmsBackend, make_backend
from shared.db import session_scope, try_job_lock, utcnow
from shared.events import (
    ContaminationSignalV1,
    SmsOutboundJobV1,
    SmsRequestedV1,
    SpikeSignalV1,
    signal_adapter,
)
from shared.kafka import client_security, make_producer
from shared.metrics import AGENT_MESSAGES
from shared.settings import get_settings
from shared.streams import _dead_letter, process_each
from shared.topics import SIGNALS, SMS_OUTBOUND, SMS_REQUESTS

log = logging.getLogger(__name__)
PRODUCER = "alerts"
settings = get_settings()


def _raw_topic(name: str, partitions: int) -> Any:
    return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions)


signals_topic = _raw_topic(SIGNALS.name, SIGNALS.partitions)
signals_dlq = _raw_topic(SIGNALS.dlq, SIGNALS.partitions)
outbound_topic = _raw_topic(SMS_OUTBOUND.name, SMS_OUTBOUND.partitions)
outbound_dlq = _raw_topic(SMS_OUTBOUND.dlq, SMS_OUTBOUND.partitions)
requests_topic = _raw_topic(SMS_REQUESTS.name, SMS_REQUESTS.partitions)
requests_dlq = _raw_topic(SMS_REQUESTS.dlq, SMS_REQUESTS.partitions)

# Fan-out of one alert never runs twice at once in this process (agent and timer).
fan_out_lock = asyncio.Lock()
_sender: Sender | None = None
backend: SmsBackend | None = None


def get_sender() -> Sender:
    global _sender, backend
    if _sender is None:
        backend = backend or make_backend(settings)
        _sender = Sender(settings, backend)
    return _sender


# ---- signals -> alerts -> jobs --------------------------------------------------------------

def _alert_for(signal: ContaminationSignalV1 | SpikeSignalV1) -> tuple[uuid.UUID, str]:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, signal)
        log.info("alert %s (%s, %s, %d signal(s))", alert.id, alert.severity, alert.status,
                 alert.signal_count)
        return alert.id, alert.status


def _fan_out(alert_id: uuid.UUID) -> bool:
    """The fan-out, one committed transaction per page of subscribers. Safe to repeat: a
    subscriber who has a delivery for the alert is not selected again."""
    created, after = 0, None
    while True:
        with session_scope(settings.sqlalchemy_url) as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                return False
            count, after = fan_out_page(session, alert, after)
            created += count
            status = alert.status
        if after is None:
            break
    if created:
        log.info("alert %s: %d deliveries", alert_id, created)
    return status == "sending"


def _pending_page(alert_id: uuid.UUID, after: uuid.UUID | None) -> list[tuple[uuid.UUID,
                                                                             uuid.UUID]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return repository.pending_jobs(session, alert_id, after, PAGE_SIZE)


_producer: AIOKafkaProducer | None = None


async def job_producer() -> AIOKafkaProducer:
    """A plain aiokafka producer for the jobs: a page of jobs is sent without waiting on
    each (Faust's per-message send costs orders of magnitude more than aiokafka's;
    docs/performance.md)."""
    global _producer
    if _producer is None:
        _producer = make_producer(settings)
        await _producer.start()
    return _producer


async def publish_pending(alert_id: uuid.UUID) -> int:
    """One job per pending delivery of the alert, a page at a time (never all in memory)."""
    started = time.monotonic()
    sent = 0
    after: uuid.UUID | None = None
    producer = await job_producer()
    while page := await asyncio.to_thread(_pending_page, alert_id, after):
        now = utcnow()
        futures = [
            await producer.send(
                SMS_OUTBOUND.name, key=str(subscriber_id).encode(),
                value=SmsOutboundJobV1(producer=PRODUCER, delivery_id=delivery_id,
                                       alert_id=alert_id, subscriber_id=subscriber_id,
                                       created_at=now).model_dump_json().encode())
            for delivery_id, subscriber_id in page]
        await asyncio.gather(*futures)  # acks=all for the whole page
        sent += len(page)
        after = page[-1][0]
    if sent:
        log.info("alert %s: %d jobs published in %.1fs", alert_id, sent,
                 time.monotonic() - started)
    return sent


async def fan_out_and_publish(alert_id: uuid.UUID) -> None:
    async with fan_out_lock:
        if await asyncio.to_thread(_fan_out, alert_id):
            await publish_pending(alert_id)


async def handle_signal(signal: ContaminationSignalV1 | SpikeSignalV1) -> None:
    """Idempotent: a redelivered signal finds its alert and re-sends only pending jobs
    (the sender drops jobs whose delivery is no longer pending)."""
    alert_id, status = await asyncio.to_thread(_alert_for, signal)
    if status in ("approved", "sending"):
        await fan_out_and_publish(alert_id)


def parse_signal(raw: bytes) -> ContaminationSignalV1 | SpikeSignalV1:
    return signal_adapter.validate_json(raw)


@app.agent(signals_topic)
async def alerting(stream: Any) -> None:
    await process_each(stream, service="alerts", agent="alerting", parse=parse_signal,
                       handle=handle_signal, dlq=signals_dlq)


# ---- the dispatcher: approved by officials, expiry, done, crash recovery --------------------

# Delivery counts last announced on alerts.events.v1, per alert (this process).
_published_counts: dict[uuid.UUID, dict[str, int]] = {}


def _housekeeping() -> list[uuid.UUID]:
    """Expire due alerts, mark finished ones sent, apply early status callbacks, announce
    delivery counts that moved; return approved alerts to fan out."""
    with session_scope(settings.sqlalchemy_url) as session:
        to_fan_out: list[uuid.UUID] = []
        if not try_job_lock(session, "alerts.housekeeping"):  # another worker's round
            return to_fan_out
        for alert in repository.open_alerts(session):
            if expire_if_due(alert):
                log.info("alert %s expired", alert.id)
            elif alert.status == "approved":
                to_fan_out.append(alert.id)
            elif alert.status == "sending" and finish_if_done(session, alert):
                log.info("alert %s sent", alert.id)
        apply_early_statuses(session)  # callbacks that came before the record
        changes.publish_delivery_counts(session, _published_counts)
        return to_fan_out


def _sending_alerts() -> list[uuid.UUID]:
    with session_scope(settings.sqlalchemy_url) as session:
        return repository.sending_alert_ids(session)


def _alert_of(delivery_id: uuid.UUID) -> tuple[uuid.UUID | None, uuid.UUID] | None:
    with session_scope(settings.sqlalchemy_url) as session:
        return repository.delivery_target(session, delivery_id)


async def reconcile() -> None:
    """Deliveries stuck in `sending` (the worker died mid-send) are checked with the
    provider; those never accepted go back to the queue."""
    for delivery_id in await get_sender().reconcile_stale():
        found = await asyncio.to_thread(_alert_of, delivery_id)
        if found is None:
            continue
        alert_id, subscriber_id = found
        if alert_id is None:
            await get_sender().send_delivery(delivery_id)
            continue
        job = SmsOutboundJobV1(producer=PRODUCER, delivery_id=delivery_id, alert_id=alert_id,
                               subscriber_id=subscriber_id, created_at=utcnow())
        await outbound_topic.send(key=str(subscriber_id).encode(),
                                  value=job.model_dump_json().encode())


RECOVER_ATTEMPTS = 10


@app.task
async def recover_on_start() -> None:
    """After a restart: a fan-out cut short is completed, and jobs acknowledged but never
    sent (the process died with sends in flight) are published again; the claim makes the
    duplicates harmless. Another worker may be fanning the same alert out at this moment
    (its unique (alert, subscriber) rows collide with ours): then this one waits and tries
    again, and finds every delivery made (it crashed the worker at start before)."""
    for alert_id in await asyncio.to_thread(_sending_alerts):
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(IntegrityError),
            stop=stop_after_attempt(RECOVER_ATTEMPTS),
            wait=wait_incrementing(start=1, increment=1), before_sleep=_log_recovery_wait,
            reraise=True)
        try:
            await retrying(fan_out_and_publish, alert_id)
        except IntegrityError:
            log.warning("alert %s: recovery gave up; the dispatcher's ticks go on", alert_id)


def _log_recovery_wait(state: RetryCallState) -> None:
    log.info("alert %s: another worker is fanning it out; recovery again in %.0f s",
             state.args[0], state.upcoming_sleep)


@app.timer(1.0)
async def dispatch() -> None:
    # Never let one failing tick stop the timer (e.g. two workers fanning out one alert at
    # once: one of them meets the unique (alert, subscriber) key and tries again next tick).
    try:
        for alert_id in await asyncio.to_thread(_housekeeping):
            await fan_out_and_publish(alert_id)
        await reconcile()
    except Exception:
        log.exception("dispatch tick failed; retrying on the next one")


# ---- sending --------------------------------------------------------------------------------

# Jobs are read with a plain aiokafka consumer of its own group, not a Faust agent: Faust's
# consumer thread and per-event machinery cost more CPU than sending the SMS itself. Offsets
# are committed only once a batch is done, so a crash redelivers what was in flight (the
# claim makes a redelivered job harmless; pending jobs are republished on start anyway).
SENDER_GROUP = "lookout-alerts-sender"
# Slices of a batch sent at once (one token bucket): while one waits on the database or the
# provider, the next is claimed.
SEND_PIPELINES = 4


def _job_consumer() -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        SMS_OUTBOUND.name, bootstrap_servers=settings.bootstrap_servers,
        group_id=SENDER_GROUP, enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=int(settings.stream_session_timeout * 1000),
        heartbeat_interval_ms=int(settings.stream_heartbeat_interval * 1000),
        rebalance_timeout_ms=int(settings.stream_session_timeout * 1000),
        fetch_max_wait_ms=max(settings.stream_fetch_max_wait_ms, 100),
        **client_security(settings),
    )


async def send_records(records: list[Any], *, agent: str = "sending") -> None:
    """One slice of jobs: one claim, concurrent sends, one record (each delivery is still
    claimed once). Retried as a whole; one that keeps failing is dead-lettered."""
    sender = get_sender()
    jobs: list[tuple[Any, bytes, SmsOutboundJobV1]] = []
    for record in records:
        raw = record.value or b""
        try:
            jobs.append((record, raw, SmsOutboundJobV1.model_validate_json(raw)))
        except (ValidationError, ValueError) as exc:
            await _dead_letter(outbound_dlq, record, raw, f"undecodable: {exc}", "alerts", agent)
    if not jobs:
        return
    retrying = AsyncRetrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.4),
                             before_sleep=_log_batch_retry, reraise=True)
    try:
        await retrying(sender.send_batch, [job.delivery_id for _r, _raw, job in jobs])
    except Exception as exc:
        for record, raw, _job in jobs:
            await _dead_letter(outbound_dlq, record, raw, f"handler failed: {exc!r}", "alerts",
                               agent)
        return
    AGENT_MESSAGES.labels("alerts", agent, "ok").inc(len(jobs))


def _log_batch_retry(state: RetryCallState) -> None:
    log.warning("send batch attempt %d failed: %r", state.attempt_number,
                state.outcome.exception() if state.outcome else None)


async def consume_jobs(consumer: AIOKafkaConsumer) -> None:
    size = settings.sms_send_concurrency
    while True:
        batches = await consumer.getmany(timeout_ms=1000, max_records=size * SEND_PIPELINES)
        records = [r for partition in batches.values() for r in partition]
        if not records:
            continue
        await asyncio.gather(*(send_records(records[i:i + size])
                               for i in range(0, len(records), size)))
        await consumer.commit()


@app.task
async def sending() -> None:
    """The sender's consumer; restarted after a failure (e.g. the broker went away)."""
    await AsyncRetrying(wait=wait_fixed(2), before_sleep=_log_restart)(_run_job_consumer)


async def _run_job_consumer() -> None:
    consumer = _job_consumer()
    try:
        await consumer.start()
        await consume_jobs(consumer)
    finally:
        await consumer.stop()


def _log_restart(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.error("sending: the job consumer failed; restarting it in 2 s", exc_info=error)


# ---- texts other services ask for -----------------------------------------------------------

def _request_delivery(request: SmsRequestedV1) -> uuid.UUID | None:
    with session_scope(settings.sqlalchemy_url) as session:
        return request_delivery(session, request)


async def handle_request(request: SmsRequestedV1) -> None:
    try:
        delivery_id = await asyncio.to_thread(_request_delivery, request)
    except IntegrityError:  # the same request created concurrently: use that one
        delivery_id = await asyncio.to_thread(_request_delivery, request)
    if delivery_id is not None:
        await get_sender().send_delivery(delivery_id)


@app.agent(requests_topic, concurrency=1)
async def requesting(stream: Any) -> None:
    await process_each(stream, service="alerts", agent="requesting",
                       parse=SmsRequestedV1.model_validate_json, handle=handle_request,
                       dlq=requests_dlq)


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def close_clients(app: Any, **kwargs: Any) -> None:
    """Close the SMS backend's HTTP session and the job producer on a clean stop."""
    global _producer
    if backend is not None:
        await backend.close()
    if _producer is not None:
        await _producer.stop()
        _producer = None
