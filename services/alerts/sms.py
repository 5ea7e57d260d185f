"""The SMS interface and its two backends: the dev outbox and Twilio (the real SDK)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import aiohttp
from sqlalchemy import select
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from services.alerts.models import DevOutboxMessage
from shared.crypto import decrypt_phone, encrypt_phone, mask_phone
from shared.db import session_scope
from shared.gsm import segment_count
from shared.settings import Settings

REQUEST_TIMEOUT = 10.0  # seconds per Twilio API request
# Twilio error codes (https://www.twilio.com/docs/api/errors).
UNSUBSCRIBED = {21610}
INVALID_NUMBER = {21211, 21614, 21217, 21401, 21407, 21408, 21612}


@dataclass(frozen=True)
class Receipt:
    sid: str
    status: str
    segments: int


class SmsError(Exception):
    def __init__(self, message: str, *, code: int | None, http_status: int | None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    @property
    def retryable(self) -> bool:
        return self.http_status is None or self.http_status == 429 or self.http_status >= 500

    @property
    def unsubscribed(self) -> bool:
        return self.code in UNSUBSCRIBED

    @property
    def invalid_number(self) -> bool:
        return self.code in INVALID_NUMBER


class SmsBackend(Protocol):
    name: str

    async def send(self, to: str, body: str) -> Receipt: ...

    async def find_sent(self, to: str, body: str, since: datetime) -> Receipt | None:
        """A message with this body already accepted for `to` since `since`, if any (used to
        reconcile a send whose outcome was lost in a crash)."""
        ...

    async def close(self) -> None: ...


class OutboxSmsBackend:
    """Development backend: stores the message for the /dev/outbox page instead of texting."""

    name = "outbox"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _store(self, to: str, body: str) -> Receipt:
        sid = "DEV" + uuid.uuid4().hex
        segments = segment_count(body)
        with session_scope(self.settings.sqlalchemy_url) as session:
            session.add(DevOutboxMessage(
                sid=sid, to_encrypted=encrypt_phone(self.settings.secret_key, to),
                to_masked=mask_phone(to), body=body, segments=segments,
            ))
        return Receipt(sid=sid, status="queued", segments=segments)

    async def send(self, to: str, body: str) -> Receipt:
        return await asyncio.to_thread(self._store, to, body)

    def _find(self, to: str, body: str, since: datetime) -> Receipt | None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            rows = session.scalars(select(DevOutboxMessage).where(
                DevOutboxMessage.body == body,
                DevOutboxMessage.created_at >= since - timedelta(seconds=5)))
            for row in rows:
                if decrypt_phone(self.settings.secret_key, row.to_encrypted) == to:
                    return Receipt(sid=row.sid, status="queued", segments=row.segments)
        return None

    async def find_sent(self, to: str, body: str, since: datetime) -> Receipt | None:
        return await asyncio.to_thread(self._find, to, body, since)

    async def close(self) -> None:
        return None


class TwilioSmsBackend:
    """Twilio's Messages API through the official SDK (async HTTP client)."""

    name = "twilio"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = AsyncTwilioHttpClient()
        self.client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                             http_client=self.http)
        self.client.api.base_url = settings.twilio_api_base_url.rstrip("/")

    async def send(self, to: str, body: str) -> Receipt:
        kwargs: dict[str, str] = {"to": to, "body": body}
        if self.settings.twilio_messaging_service_sid:
            kwargs["messaging_service_sid"] = self.settings.twilio_messaging_service_sid
        else:
            kwargs["from_"] = self.settings.twilio_from
        if self.settings.public_alerts_url:
            kwargs["status_callback"] = self.settings.public_alerts_url.rstrip("/") + \
                "/v1/sms/status"
        try:
            # A bounded request: with the heartbeat between retries, a delivery in `sending`
            # is touched at least every REQUEST_TIMEOUT + 12 s, below the stale threshold.
            message = await asyncio.wait_for(self.client.messages.create_async(**kwargs),
                                             REQUEST_TIMEOUT)
        except TwilioRestException as exc:
            raise SmsError(exc.msg, code=exc.code, http_status=exc.status) from exc
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise SmsError(repr(exc), code=None, http_status=None) from exc
        return Receipt(sid=str(message.sid), status=str(message.status),
                       segments=int(message.num_segments or segment_count(body)))

    async def find_sent(self, to: str, body: str, since: datetime) -> Receipt | None:
        """Twilio lists a number's messages newest first. DateSent is not used as a filter:
        a message still queued has no DateSent yet; DateCreated is checked here instead."""
        try:
            messages = await self.client.messages.list_async(to=to, limit=50, page_size=50)
        except TwilioRestException as exc:
            raise SmsError(exc.msg, code=exc.code, http_status=exc.status) from exc
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise SmsError(repr(exc), code=None, http_status=None) from exc
        for message in messages:
            created = message.date_created
            if message.body == body and (created is None or
                                         created >= since - timedelta(seconds=5)):
                return Receipt(sid=str(message.sid), status=str(message.status),
                               segments=int(message.num_segments or segment_count(body)))
        return None

    async def close(self) -> None:
        await self.http.close()


def make_backend(settings: Settings) -> SmsBackend:
    if settings.sms_backend == "twilio":
        return TwilioSmsBackend(settings)
    return OutboxSmsBackend(settings)
