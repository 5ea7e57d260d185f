"""Status progression and the signed status callbacks (one worker pool per account)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from twilio.request_validator import RequestValidator

from testing.twilio_server.catalog import API_VERSION, CALLBACK_TIMEOUT, CALLBACK_WORKERS
from testing.twilio_server.poster import FormPoster
from testing.twilio_server.store import Message, MessageStore

logger = logging.getLogger("testing.twilio_server")


class StatusCallbacks:
    """Moves each accepted message through its statuses, one step per ``callback_delay``;
    with a ``StatusCallback`` URL each step is POSTed there, in order, signed."""

    def __init__(self, store: MessageStore) -> None:
        self.store = store
        self.account_sid = store.account_sid
        self._validator = RequestValidator(store.auth_token)
        self._queue: asyncio.Queue[tuple[Message, list[str], int]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._sender: FormPoster | None = None
        self._failing_urls: set[str] = set()
        self._closing = False

    def _steps(self, msg: Message) -> list[str]:
        rule = msg.final
        if rule is None:
            return ["sent", "delivered"]
        return ["failed"] if rule.status == "failed" else ["sent", rule.status]

    def schedule(self, msg: Message) -> None:
        """Timers drive the status steps; callbacks go through a small worker pool."""
        steps = self._steps(msg)
        delay = max(self.store.callback_delay, 0.0)
        loop = asyncio.get_running_loop()
        if msg.status_callback is None:
            for i, status in enumerate(steps, start=1):
                loop.call_later(delay * i, self.store.advance, msg, status)
        else:
            loop.call_later(delay, self._enqueue, msg, steps, 0)

    def _enqueue(self, msg: Message, steps: list[str], index: int) -> None:
        if not self.store.holds(msg.sid):
            return  # deleted or reset meanwhile: no more callbacks
        self.store.advance(msg, steps[index])
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._sender = FormPoster(CALLBACK_TIMEOUT)
            self._workers = [
                asyncio.create_task(self._callback_worker(self._queue, self._sender))
                for _ in range(CALLBACK_WORKERS)
            ]
        self._queue.put_nowait((msg, steps, index))

    async def _callback_worker(
        self, queue: asyncio.Queue[tuple[Message, list[str], int]], sender: FormPoster
    ) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            msg, steps, index = await queue.get()
            try:
                await self._post_callback(sender, msg, steps[index])
            except Exception:
                logger.exception("status callback for %s crashed", msg.sid)
            if index + 1 < len(steps):  # next step only after this POST: callbacks stay ordered
                loop.call_later(max(self.store.callback_delay, 0.0), self._enqueue, msg, steps,
                                index + 1)

    def callback_params(self, msg: Message, status: str) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": msg.from_ or "",
            "MessageSid": msg.sid,
            "MessageStatus": status,
            "SmsSid": msg.sid,
            "SmsStatus": status,
            "To": msg.to,
        }
        if msg.messaging_service_sid:
            params["MessagingServiceSid"] = msg.messaging_service_sid
        if msg.error_code is not None:
            params["ErrorCode"] = str(msg.error_code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = datetime.now(UTC).strftime("%y%m%d%H%M")
        return params

    async def _post_callback(self, sender: FormPoster, msg: Message, status: str) -> None:
        url = msg.status_callback
        assert url is not None
        params = self.callback_params(msg, status)
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        record: dict[str, Any] = {"sid": msg.sid, "url": url, "status": status, "at": time.time()}
        try:
            record["http_status"] = await sender.post(url, params, headers)
            outcome = "ok"
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            record["error"] = repr(exc)
            outcome = "error"
            first = url not in self._failing_urls
            self._failing_urls.add(url)
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "status callback to %s failed: %r",
                url,
                exc,
            )
        self.store.log_callback(record, outcome)

    async def aclose(self) -> None:
        self._closing = True
        for task in self._workers:
            task.cancel()
        if self._workers:  # bounded: shutdown must never hang on a callback
            await asyncio.wait(self._workers, timeout=2.0)
        self._workers, self._queue = [], None
        self._closing = False
        if self._sender is not None:
            self._sender.close()
            self._sender = None
