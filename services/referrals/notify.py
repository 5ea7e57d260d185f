"""Provider notices behind one small interface: webhook, e-mail, SMS, or a fake that records.

A notice is a JSON-able dict built from what the person consented to share; the notifier
only delivers it. SMS goes to the provider's own number (business contact data from the
directory) through the shared SMS backend (`shared.sms`: Twilio, or the dev outbox in
`referrals_dev_outbox`); alerts' `sms.requests.v1` is for people, addressed by contact_ref.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.referrals.models import DevSmsMessage
from services.referrals.texts import provider_notice_text
from shared.crypto import sign_webhook, webhook_secret
from shared.outbound import RefusedURLError, post_pinned, public_target
from shared.settings import Settings
from shared.sms import SmsError, make_backend

log = logging.getLogger(__name__)
WEBHOOK_FAILED = "webhook delivery failed"


class NotifierError(RuntimeError):
    """The notice could not be delivered (recorded as `failed`; staff can follow up)."""


class ProviderNotifier(Protocol):
    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None: ...


class _Retryable(NotifierError):
    """A failure worth another attempt: no connection, a timeout, a 5xx or 429 answer."""


class WebhookNotifier:
    """POSTs the notice as JSON, signed, to the provider's URL (docs/referrals.md).

    The URL must be https (`require_https`, outside dev) and its host must resolve only to
    public addresses (`shared.outbound`); the request goes to the address that was checked.
    Headers: `Lookout-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the
    provider's own secret (`shared.crypto.webhook_secret` of its service id),
    `Lookout-Timestamp` (Unix seconds) and `Lookout-Delivery` (the same on every attempt).
    Unreachable, timed-out, 5xx and 429 answers are retried (`attempts`, exponential
    backoff); any non-2xx is a failure. The recorded error is always the same generic text
    (it is shown to site staff: it must not tell a scanner which ports answer); the reason
    goes to the log."""

    def __init__(self, secret_key: str, *, require_https: bool = True,
                 allow_private: bool = False, timeout: float = 5.0, attempts: int = 3,
                 backoff: float = 1.0, verify: ssl.SSLContext | bool = True) -> None:
        self.secret_key, self.verify = secret_key, verify
        self.require_https, self.allow_private = require_https, allow_private
        self.timeout, self.attempts, self.backoff = timeout, attempts, backoff

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        service_id = str(notice.get("service_id", ""))
        body = json.dumps(notice, separators=(",", ":"), ensure_ascii=False).encode()
        delivery = f"{notice.get('referral_id', '')}:{service_id}"
        retrying = Retrying(retry=retry_if_exception_type(_Retryable),
                            stop=stop_after_attempt(self.attempts),
                            wait=wait_exponential(multiplier=self.backoff, max=30),
                            reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._attempt(address, service_id, body, delivery)
        except NotifierError as exc:
            log.warning("webhook notice for service %s failed: %s", service_id, exc)
            raise NotifierError(WEBHOOK_FAILED) from exc

    def _attempt(self, address: str, service_id: str, body: bytes, delivery: str) -> None:
        try:
            target = public_target(address, require_https=self.require_https,
                                   allow_private=self.allow_private)
        except RefusedURLError as exc:
            raise NotifierError(f"address refused: {exc}") from exc
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "lookout-referrals/1",
                   "Lookout-Delivery": delivery, "Lookout-Timestamp": str(timestamp),
                   "Lookout-Signature": sign_webhook(
                       webhook_secret(self.secret_key, service_id), timestamp, body)}
        try:
            response = post_pinned(target, body, headers, self.timeout, self.verify)
        except httpx.HTTPError as exc:
            raise _Retryable(f"unreachable: {exc.__class__.__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(f"answered {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise NotifierError(f"answered {response.status_code}")


class EmailNotifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        if not self.settings.referrals_smtp_host:
            raise NotifierError("e-mail is not configured (LOOKOUT_REFERRALS_SMTP_HOST)")
        message = EmailMessage()
        message["From"] = self.settings.referrals_smtp_from
        message["To"] = address
        message["Subject"] = f"Lookout referral {notice.get('referral_id', '')}"
        message.set_content(json.dumps(notice, indent=2, ensure_ascii=False))
        try:
            with smtplib.SMTP(self.settings.referrals_smtp_host, self.settings.referrals_smtp_port,
                              timeout=10) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifierError(f"e-mail failed: {exc.__class__.__name__}") from exc


class SmsNotifier:
    """Texts the notice to the provider's number (`LOOKOUT_SMS_BACKEND`: Twilio or the dev
    outbox). Called from worker threads and sync endpoints, so each send runs its own loop.
    Errors name Twilio's code, never the number."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        body = provider_notice_text(notice)
        try:
            asyncio.run(self._send(address, body))
        except SmsError as exc:
            reason = f"Twilio error {exc.code}" if exc.code else "SMS provider unreachable"
            if exc.unsubscribed:
                reason += " (the number has opted out: STOP)"
            raise NotifierError(f"sms failed: {reason}") from exc

    async def _send(self, to: str, body: str) -> None:
        backend = make_backend(self.settings, DevSmsMessage, status_callbacks=False)
        try:
            await backend.send(to, body)
        finally:
            await backend.close()


class ChannelNotifier:
    """Dispatches by the provider's channel."""

    def __init__(self, settings: Settings) -> None:
        self.by_channel: dict[str, ProviderNotifier] = {
            "webhook": WebhookNotifier(
                settings.secret_key, require_https=settings.env == "prod",
                allow_private=settings.referrals_webhook_allow_private),
            "email": EmailNotifier(settings),
            "sms": SmsNotifier(settings)}

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        notifier = self.by_channel.get(channel)
        if notifier is None:
            raise NotifierError(f"channel {channel!r} is not supported")
        notifier.send(channel, address, notice)


class FakeNotifier:
    """Records every notice (tests); `fail` makes the next sends fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        if self.fail:
            raise NotifierError("fake failure")
        self.sent.append((channel, address, notice))


class NoticeQueue:
    """Provider notices delivered in background threads, so a slow provider holds neither a
    request nor the worker's conversation. A notice lost with its process (stopped before it
    was recorded) is sent again by the worker's timer (`service.stuck_hand_offs`), once its
    claim has gone stale (`service.claim_notice`)."""

    def __init__(self, workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="referrals-notice")
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future = self._pool.submit(fn, *args)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("provider notice failed", exc_info=future.exception())

    def join(self, timeout: float = 30.0) -> None:
        """Wait for every notice submitted so far (tests, shutdown)."""
        with self._lock:
            pending = set(self._pending)
        _done, left = wait_futures(pending, timeout)
        if left:
            raise TimeoutError(f"{len(left)} provider notices still running after {timeout}s")
