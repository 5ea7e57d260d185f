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
from datetime import timedelta

from prometheus_client import Counter
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

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


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    phone: str
    body: str


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


class Sender:
    def __init__(self, settings: Settings, backend: SmsBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.bucket = TokenBucket(settings.sms_rate_per_second)
        self.in_flight: set[uuid.UUID] = set()

    # ---- database steps (run in a thread) ---------------------------------------------------

    def _claim(self, delivery_id: uuid.UUID) -> Claimed | None:
        """Mark the delivery `sending` and return what to send, or None if not to send."""
        url = self.settings.sqlalchemy_url
        with session_scope(url) as session:
            now = utcnow()
            claimed = session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.status == "pending",
                       _sendable_now())  # type: ignore[arg-type]
                .values(status="sending", attempts=Delivery.attempts + 1, updated_at=now)
                .returning(Delivery.subscriber_id, Delivery.body)
            ).first()
            if claimed is None:
                # Still pending but not sendable (STOP, expired or cancelled alert): skip it.
                session.execute(update(Delivery)
                                .where(Delivery.id == delivery_id, Delivery.status == "pending")
                                .values(status="skipped", updated_at=now))
                return None
            subscriber_id, body = claimed
            encrypted = session.scalar(select(Subscriber.phone_encrypted)
                                       .where(Subscriber.id == subscriber_id))
            assert encrypted is not None
        return Claimed(delivery_id, decrypt_phone(self.settings.secret_key, encrypted), body)

    def _touch(self, delivery_id: uuid.UUID) -> None:
        """A heartbeat while retrying, so the delivery does not look stale."""
        with session_scope(self.settings.sqlalchemy_url) as session:
            session.execute(update(Delivery).where(Delivery.id == delivery_id,
                                                   Delivery.status == "sending")
                            .values(updated_at=utcnow()))

    def _record(self, delivery_id: uuid.UUID, receipt: Receipt | None,
                error: SmsError | None) -> None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.backend = self.backend.name
            if receipt is not None:
                _set(delivery, "queued")
                delivery.provider_sid = receipt.sid
                delivery.segments = receipt.segments
                delivery.handed_at = utcnow()
                return
            assert error is not None
            delivery.error_code = str(error.code) if error.code else None
            _set(delivery, "failed")
            _mark_subscriber(session, delivery, error)

    # ---- sending ----------------------------------------------------------------------------

    async def handle(self, job: SmsOutboundJobV1) -> None:
        await self.send_delivery(job.delivery_id)

    async def send_delivery(self, delivery_id: uuid.UUID) -> str:
        """Send one delivery if it is still pending; returns the outcome."""
        await self.bucket.take()  # wait for the rate limit first: STOP is checked after it
        self.in_flight.add(delivery_id)
        try:
            claimed = await asyncio.to_thread(self._claim, delivery_id)
            if claimed is None:
                SMS_RESULTS.labels(self.backend.name, "skipped").inc()
                return "skipped"
            return await self._send(claimed)
        finally:
            self.in_flight.discard(delivery_id)

    async def _send(self, claimed: Claimed) -> str:
        error: SmsError | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                receipt = await self.backend.send(claimed.phone, claimed.body)
            except SmsError as exc:
                error = exc
                if exc.retryable and attempt < MAX_ATTEMPTS:
                    delay = min(0.5 * 2**attempt, 8) * (0.5 + random.random())
                    log.warning("sms retry %d in %.1fs (code %s)", attempt, delay, exc.code)
                    await asyncio.to_thread(self._touch, claimed.delivery_id)
                    await asyncio.sleep(delay)
                    await self.bucket.take()
                    continue
                break
            await asyncio.to_thread(self._record, claimed.delivery_id, receipt, None)
            SMS_RESULTS.labels(self.backend.name, "queued").inc()
            return "queued"
        await asyncio.to_thread(self._record, claimed.delivery_id, None, error)
        SMS_RESULTS.labels(self.backend.name, "failed").inc()
        log.warning("sms failed for delivery %s (code %s)", claimed.delivery_id,
                    error.code if error else None)
        return "failed"

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
