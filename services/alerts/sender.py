"""The sender: turns one delivery (an alert's message to a subscriber, or a text another
service asked for) into at most one SMS.

The delivery row is the guard against double sends: a delivery is claimed with one
conditional UPDATE (`pending` -> `sending`, only while the contact may be texted and the
alert is still live), committed before the backend is called. STOP is thus checked at send
time, after the rate limiter let the message go. A crash between the claim and recording the
answer leaves the delivery `sending`: `reconcile_stale` asks the provider whether the message
went out (same number, same body, since the claim) and records it, or puts it back to
`pending` to be sent; it never sends a second copy of an accepted message.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Boolean, and_, exists, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from services.alerts.contacts import TEXTABLE
from services.alerts.models import Alert, Delivery, Subscriber
from services.alerts.sms import Receipt, SmsBackend, SmsError
from shared.crypto import decrypt_phone
from shared.db import session_scope, utcnow
from shared.events import SmsOutboundJobV1
from shared.ratelimit import TokenBucket
from shared.settings import Settings

log = logging.getLogger(__name__)
SMS_RESULTS = Counter("lookout_alerts_sms_total", "SMS send outcomes", ["backend", "outcome"])
RECONCILED = Counter("lookout_alerts_sms_reconciled_total",
                     "Deliveries found stuck in `sending` after a crash, by outcome",
                     ["outcome"])
MAX_ATTEMPTS = 5


def _send_backoff(state: RetryCallState) -> float:
    """Doubling from a second, at most 8 s, times a jitter between 0.5 and 1.5."""
    return min(0.5 * 2.0**state.attempt_number, 8.0) * (0.5 + random.random())


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    phone: str
    body: str
    claimed_at: datetime


class likely(FunctionElement[bool]):
    """A condition that holds for most rows it is checked on, not one to find rows by. On
    SQLite it is rendered as the planner hint `likely(...)` (a term SQLite's planner does
    not look rows up by): without table statistics SQLite expects an equality on an indexed
    column to match ~10 rows, so `id IN (64 ids) AND status = 'pending'` was run through
    the status index, a walk over every pending delivery (all of them at the start of a
    large fan-out: a claim took about a hundred times as long as through the primary key;
    docs/performance.md). Elsewhere (PostgreSQL, which keeps statistics) the plain
    condition."""

    type = Boolean()
    inherit_cache = True
    name = "likely"


@compiles(likely)
def _plain_condition(element: likely, compiler: SQLCompiler, **kw: object) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(likely, "sqlite")
def _sqlite_likely(element: likely, compiler: SQLCompiler, **kw: object) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"


def _sendable_now() -> object:
    """The SQL condition under which a delivery may be sent right now."""
    now = utcnow()
    alert_live = exists().where(Alert.id == Delivery.alert_id,
                                Alert.status.in_(("approved", "sending")),
                                or_(Alert.expires_at.is_(None), Alert.expires_at > now))
    alert_contact = exists().where(Subscriber.id == Delivery.subscriber_id,
                                   Subscriber.status == "active")
    other_contact = exists().where(Subscriber.id == Delivery.subscriber_id,
                                   Subscriber.status.in_(TEXTABLE))
    return or_(and_(Delivery.alert_id.is_not(None), alert_live, alert_contact),
               and_(Delivery.alert_id.is_(None), other_contact))


def claim_statement(delivery_ids: list[uuid.UUID], now: datetime) -> Any:
    """Pending deliveries among these that may be sent now -> `sending`, returning (id,
    subscriber, body) of each."""
    return (update(Delivery)
            .where(Delivery.id.in_(delivery_ids), likely(Delivery.status == "pending"),
                   _sendable_now())  # type: ignore[arg-type]
            .values(status="sending", attempts=Delivery.attempts + 1, updated_at=now)
            .returning(Delivery.id, Delivery.subscriber_id, Delivery.body)
            .execution_options(synchronize_session=False))


class Sender:
    def __init__(self, settings: Settings, backend: SmsBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.bucket = TokenBucket(settings.sms_rate_per_second)
        self.in_flight: set[uuid.UUID] = set()

    # ---- database steps (run in a thread) ---------------------------------------------------

    def _claim(self, delivery_ids: list[uuid.UUID]) -> list[Claimed]:
        """Mark the sendable pending deliveries `sending` (one statement) and return what to
        send; pending ones that may not be sent (STOP, expired or cancelled alert) are
        skipped; the others (already handled: a redelivered job) are left alone."""
        url = self.settings.sqlalchemy_url
        with session_scope(url) as session:
            now = utcnow()
            rows = session.execute(claim_statement(delivery_ids, now)).all()
            claimed = {r[0] for r in rows}
            rest = [d for d in delivery_ids if d not in claimed]
            if rest:
                session.execute(update(Delivery)
                                .where(Delivery.id.in_(rest),
                                       likely(Delivery.status == "pending"))
                                .values(status="skipped", updated_at=now)
                                .execution_options(synchronize_session=False))
            phones = dict(session.execute(
                select(Subscriber.id, Subscriber.phone_encrypted)
                .where(Subscriber.id.in_({r[1] for r in rows}))).all()) if rows else {}
        key = self.settings.secret_key
        return [Claimed(d, decrypt_phone(key, phones[s]), body, now) for d, s, body in rows]

    def _touch(self, delivery_id: uuid.UUID) -> None:
        """A heartbeat while retrying, so the delivery does not look stale."""
        with session_scope(self.settings.sqlalchemy_url) as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id,
                                                   Delivery.status == "sending")
                            .values(updated_at=utcnow())
                            .execution_options(synchronize_session=False))

    def _record(self, results: list[tuple[uuid.UUID, Receipt | None, SmsError | None]]) -> None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            now = utcnow()
            handed = [{"id": d, "status": "queued", "provider_sid": r.sid,
                       "segments": r.segments, "handed_at": now, "updated_at": now,
                       "backend": self.backend.name}
                      for d, r, _e in results if r is not None]
            if handed:
                session.execute(update(Delivery), handed)
            for delivery_id, receipt, error in results:
                if receipt is not None or error is None:
                    continue
                delivery = session.get(Delivery, delivery_id)
                assert delivery is not None
                delivery.backend = self.backend.name
                delivery.error_code = str(error.code) if error.code else None
                _set(delivery, "failed")
                _mark_subscriber(session, delivery, error)

    # ---- sending ----------------------------------------------------------------------------

    async def handle(self, job: SmsOutboundJobV1) -> None:
        await self.send_batch([job.delivery_id])

    async def send_delivery(self, delivery_id: uuid.UUID) -> str:
        """Send one delivery if it is still pending; returns the outcome."""
        return (await self.send_batch([delivery_id]))[delivery_id]

    async def send_batch(self, delivery_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Send deliveries at once; returns the outcome of each: queued, failed or skipped.

        Under a rate limit the batch goes in slices of a tenth of a second's worth: each slice
        takes its tokens, then is claimed (STOP checked then), sent concurrently and recorded
        while the next slice waits for its tokens."""
        ids = list(dict.fromkeys(delivery_ids))  # a job redelivered within the batch
        rate = self.settings.sms_rate_per_second
        size = len(ids) if rate <= 0 else max(1, int(rate / 10))
        parts: list[asyncio.Task[dict[uuid.UUID, str]]] = []
        for start in range(0, len(ids), size):
            part = ids[start:start + size]
            for _ in part:
                await self.bucket.take()
            parts.append(asyncio.create_task(self._send_part(part)))
        outcomes: dict[uuid.UUID, str] = {}
        for done in await asyncio.gather(*parts):
            outcomes.update(done)
        return outcomes

    async def _send_part(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        """One claim, concurrent sends, one record."""
        self.in_flight.update(ids)
        try:
            claimed = await asyncio.to_thread(self._claim, ids)
            results = await asyncio.gather(*(self._attempts(c) for c in claimed))
            if results:
                await asyncio.to_thread(self._record, results)
        finally:
            self.in_flight.difference_update(ids)
        outcomes = {d: "skipped" for d in ids}
        for delivery_id, receipt, error in results:
            outcomes[delivery_id] = "queued" if receipt is not None else \
                "failed" if error is not None else "unknown"
            if error is not None and receipt is None:
                log.warning("sms failed for delivery %s (code %s)", delivery_id, error.code)
        for outcome in outcomes.values():
            SMS_RESULTS.labels(self.backend.name, outcome).inc()
        return outcomes

    async def _attempts(self, claimed: Claimed) -> tuple[uuid.UUID, Receipt | None,
                                                         SmsError | None]:
        """Send, retrying what the provider says may be retried (backoff with jitter; each
        retry keeps the delivery fresh and takes a token again): the receipt once sent, the
        error once given up, (None, None) when nobody can tell whether it went."""
        # The first send goes without tenacity: most sends need no retry, and running a retry
        # object costs more CPU than the rest of a send's bookkeeping (docs/performance.md).
        try:
            return claimed.delivery_id, await self._send_once(claimed), None
        except SmsError as exc:
            if not exc.retryable:
                return claimed.delivery_id, None, exc
            first_error = exc
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, SmsError) and exc.retryable),
            stop=stop_after_attempt(MAX_ATTEMPTS), wait=_send_backoff,
            before=self._take_for_retry, before_sleep=partial(self._before_retry, claimed),
            reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise first_error  # attempt 1 is the send above
                    receipt = await self._send_once(claimed)
        except SmsError as exc:
            return claimed.delivery_id, None, exc
        return claimed.delivery_id, receipt, None

    async def _send_once(self, claimed: Claimed) -> Receipt | None:
        try:
            return await self.backend.send(claimed.phone, claimed.body)
        except SmsError as exc:
            if exc.http_status is None:
                # Timeout or broken connection: the message may have been accepted. Ask
                # before sending again, so a retry never makes a second copy; if the
                # provider cannot tell either, leave the delivery `sending` for the
                # reconciler (None).
                try:
                    found = await self.backend.find_sent(claimed.phone, claimed.body,
                                                         claimed.claimed_at)
                except SmsError:
                    return None
                if found is not None:
                    return found
            raise

    async def _take_for_retry(self, state: RetryCallState) -> None:
        if state.attempt_number > 1:
            await self.bucket.take()

    async def _before_retry(self, claimed: Claimed, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("sms retry %d in %.1fs (code %s)", state.attempt_number,
                    state.upcoming_sleep, getattr(error, "code", None))
        await asyncio.to_thread(self._touch, claimed.delivery_id)

    # ---- crash recovery ---------------------------------------------------------------------

    def _stale(self) -> list[tuple[uuid.UUID, str, str, object]]:
        cutoff = utcnow() - timedelta(seconds=self.settings.sms_stale_sending_seconds)
        with session_scope(self.settings.sqlalchemy_url) as session:
            rows = session.execute(
                select(Delivery.id, Subscriber.phone_encrypted, Delivery.body,
                       Delivery.updated_at)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.status == "sending", Delivery.updated_at < cutoff)
                .limit(1000)).all()
        return [(d, decrypt_phone(self.settings.secret_key, enc)
                 if not enc.startswith("erased:") else "", body, at)
                for d, enc, body, at in rows if d not in self.in_flight]

    def _resolve_stale(self, delivery_id: uuid.UUID, receipt: Receipt | None) -> None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None or delivery.status != "sending":
                return
            if receipt is not None:
                _set(delivery, "queued")
                delivery.backend = self.backend.name
                delivery.provider_sid = receipt.sid
                delivery.segments = receipt.segments
                delivery.handed_at = utcnow()
            else:
                _set(delivery, "pending")  # never accepted: send it (again claimed once)

    async def reconcile_stale(self) -> list[uuid.UUID]:
        """Settle deliveries stuck in `sending` (a crash after the claim). Returns the ids put
        back to `pending`, which the caller sends."""
        retry: list[uuid.UUID] = []
        for delivery_id, phone, body, since in await asyncio.to_thread(self._stale):
            receipt: Receipt | None = None
            if phone:
                try:
                    receipt = await self.backend.find_sent(phone, body, since)  # type: ignore[arg-type]
                except SmsError as exc:
                    log.warning("reconcile: provider lookup failed (%s); later", exc.code)
                    continue
            await asyncio.to_thread(self._resolve_stale, delivery_id, receipt)
            RECONCILED.labels("found" if receipt else "resend").inc()
            if receipt is None:
                retry.append(delivery_id)
        if retry:
            log.info("reconcile: %d stale deliveries to send again", len(retry))
        return retry


def _set(delivery: Delivery, status: str) -> None:
    delivery.status = status
    delivery.updated_at = utcnow()


def _mark_subscriber(session: Session, delivery: Delivery, error: SmsError) -> None:
    subscriber = session.get(Subscriber, delivery.subscriber_id)
    if subscriber is None:
        return
    if error.unsubscribed:
        subscriber.status = "stopped"
        subscriber.stopped_at = utcnow()
    elif error.invalid_number:
        subscriber.status = "invalid"
