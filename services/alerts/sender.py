"""The sender: turns one `sms.outbound.v1` job into at most one SMS.

The delivery row is the guard against double sends: only a `pending` delivery is sent, and it
is marked `sending` (committed) before the backend is called. STOP is checked at send time.
"""

from __future__ import annotations

import asyncio
import logging
import random

from prometheus_client import Counter
from sqlalchemy.orm import Session

from services.alerts.models import Delivery, Subscriber
from services.alerts.sms import Receipt, SmsBackend, SmsError
from shared.crypto import decrypt_phone
from shared.db import session_scope, utcnow
from shared.events import SmsOutboundJobV1
from shared.ratelimit import TokenBucket
from shared.settings import Settings

log = logging.getLogger(__name__)
SMS_RESULTS = Counter("lookout_alerts_sms_total", "SMS send outcomes", ["backend", "outcome"])
MAX_ATTEMPTS = 5


class Sender:
    def __init__(self, settings: Settings, backend: SmsBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.bucket = TokenBucket(settings.sms_rate_per_second)

    def _claim(self, job: SmsOutboundJobV1) -> tuple[str, str] | None:
        """Mark the delivery `sending` and return (phone, body), or None if not to send."""
        with session_scope(self.settings.sqlalchemy_url) as session:
            delivery = session.get(Delivery, job.delivery_id)
            if delivery is None or delivery.status != "pending":
                return None  # already handled: a redelivered job changes nothing
            subscriber = session.get(Subscriber, delivery.subscriber_id)
            if subscriber is None or subscriber.status != "active":
                _set(delivery, "skipped")
                return None
            _set(delivery, "sending")
            delivery.attempts += 1
            return decrypt_phone(self.settings.secret_key, subscriber.phone_encrypted), \
                delivery.body

    def _record(self, job: SmsOutboundJobV1, receipt: Receipt | None,
                error: SmsError | None) -> None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            delivery = session.get(Delivery, job.delivery_id)
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

    async def handle(self, job: SmsOutboundJobV1) -> None:
        claimed = await asyncio.to_thread(self._claim, job)
        if claimed is None:
            SMS_RESULTS.labels(self.backend.name, "skipped").inc()
            return
        phone, body = claimed
        error: SmsError | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await self.bucket.take()
            try:
                receipt = await self.backend.send(phone, body)
            except SmsError as exc:
                error = exc
                if exc.retryable and attempt < MAX_ATTEMPTS:
                    delay = min(0.5 * 2**attempt, 30) * (0.5 + random.random())
                    log.warning("sms retry %d in %.1fs (code %s)", attempt, delay, exc.code)
                    await asyncio.sleep(delay)
                    continue
                break
            await asyncio.to_thread(self._record, job, receipt, None)
            SMS_RESULTS.labels(self.backend.name, "queued").inc()
            return
        await asyncio.to_thread(self._record, job, None, error)
        SMS_RESULTS.labels(self.backend.name, "failed").inc()
        log.warning("sms failed for delivery %s (code %s)", job.delivery_id,
                    error.code if error else None)


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
