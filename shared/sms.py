"""The SMS interface and its two backends: the dev outbox and Twilio (the real SDK).

Shared by the services that text: alerts (subscribers) and referrals (providers' own
numbers). Each keeps its dev outbox in a table of its own (`DevOutboxMixin`)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import urlencode

import httpx
from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column
from twilio.base.exceptions import TwilioRestException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.crypto import decrypt_phone, encrypt_phone, mask_phone
from shared.db import UTCDateTime, session_scope, utcnow
from shared.gsm import segment_count
from shared.httpclient import HttpClient
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


class DevOutboxMixin:
    """Columns of a dev outbox table (what would have been texted); the number encrypted."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    to_encrypted: Mapped[str] = mapped_column(Text)
    to_masked: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxSmsBackend:
    """Development backend: stores the message in the service's dev outbox table (shown on
    a /dev/outbox page) instead of texting."""

    name = "outbox"

    def __init__(self, settings: Settings, table: Any) -> None:
        self.settings = settings
        self.table = table  # a DevOutboxMixin model

    def _store(self, to: str, body: str) -> Receipt:
        sid = "DEV" + uuid.uuid4().hex
        segments = segment_count(body)
        with session_scope(self.settings.sqlalchemy_url) as session:
            session.add(self.table(
                sid=sid, to_encrypted=encrypt_phone(self.settings.secret_key, to),
                to_masked=mask_phone(to), body=body, segments=segments,
            ))
        return Receipt(sid=sid, status="queued", segments=segments)

    async def send(self, to: str, body: str) -> Receipt:
        return await asyncio.to_thread(self._store, to, body)

    def _find(self, to: str, body: str, since: datetime) -> Receipt | None:
        with session_scope(self.settings.sqlalchemy_url) as session:
            rows = session.scalars(select(self.table).where(
                self.table.body == body,
                self.table.created_at >= since - timedelta(seconds=5)))
            for row in rows:
                if decrypt_phone(self.settings.secret_key, row.to_encrypted) == to:
                    return Receipt(sid=row.sid, status="queued", segments=row.segments)
        return None

    async def find_sent(self, to: str, body: str, since: datetime) -> Receipt | None:
        return await asyncio.to_thread(self._find, to, body, since)

    async def close(self) -> None:
        return None


@lru_cache(maxsize=256)
def _form_field(name: str, value: str) -> str:
    return urlencode({name: value})


def _form(data: dict[str, object]) -> str:
    """Form-encoded like `urlencode(data, doseq=True)`; a text field other than the number is
    encoded once and remembered (an alert's body, sender and callback URL are the same for
    every recipient; numbers are never kept)."""
    return "&".join(_form_field(name, value) if isinstance(value, str) and name != "To" else
                    urlencode({name: value}, doseq=True) for name, value in data.items())


class LeanTwilioHttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The twilio SDK's async HTTP client, leaner: requests go through `shared.httpclient`
    (keep-alive HTTP/1.1 on asyncio protocols; a fraction of the CPU per request of the
    SDK's aiohttp-based `AsyncTwilioHttpClient`, docs/performance.md), the form body
    URL-encoded once and the Basic credentials encoded once per client. Same interface; no
    proxy, redirect or retry options (unused here). A broken connection raises OSError, a
    bad response ConnectionError (an OSError too)."""

    def __init__(self) -> None:
        super().__init__(None, True, None)
        self.http = HttpClient()
        self._authorization: dict[tuple[str, str], str] = {}

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None,
                      headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None,
                      timeout: float | None = None,  # noqa: ASYNC109 - the SDK's interface
                      allow_redirects: bool = False) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            if auth not in self._authorization:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
                self._authorization[auth] = f"Basic {token}"
            headers["Authorization"] = self._authorization[auth]
        body = b""
        if data:
            body = _form(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if params:
            url = f"{url}?{_form(params)}"
        request = self.http.request(method.upper(), url, headers=headers, body=body)
        if timeout is None:  # the caller bounds the request (TwilioSmsBackend does)
            response = await request
        else:
            async with asyncio.timeout(timeout):
                response = await request
        return Response(response.status, response.body.decode("utf-8", "replace"),
                        response.headers)

    async def close(self) -> None:
        self.http.close()


class HttpxTwilioHttpClient(AsyncHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The twilio SDK's async HTTP client on httpx's AsyncClient (keep-alive pool), chosen
    with `LOOKOUT_SMS_HTTP_CLIENT=httpx`: the well-kept library, kept beside our lean client
    so the fan-out benchmark can compare the two (docs/alerts.md, "HTTP client"). Transport
    failures are raised as ConnectionError (an OSError), as the lean client does."""

    def __init__(self) -> None:
        super().__init__(None, True, None)
        self.http = httpx.AsyncClient(timeout=REQUEST_TIMEOUT,
                                      limits=httpx.Limits(max_keepalive_connections=256))

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None,
                      headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None,
                      timeout: float | None = None,  # noqa: ASYNC109 - the SDK's interface
                      allow_redirects: bool = False) -> Response:
        try:
            response = await self.http.request(
                method.upper(), url, params=cast(Any, params), data=data, headers=headers,
                auth=auth, follow_redirects=allow_redirects,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout)
        except httpx.TransportError as exc:
            raise ConnectionError(repr(exc)) from exc
        return Response(response.status_code, response.text, dict(response.headers))

    async def close(self) -> None:
        await self.http.aclose()


class TwilioSmsBackend:
    """Twilio's Messages API through the official SDK (async HTTP client). Delivery status
    callbacks go to the alerts service (`LOOKOUT_PUBLIC_ALERTS_URL`) unless
    `status_callbacks` is off (texts alerts does not track)."""

    name = "twilio"

    def __init__(self, settings: Settings, *, status_callbacks: bool = True) -> None:
        self.settings = settings
        self.status_callbacks = status_callbacks
        self.http: AsyncHttpClient = (HttpxTwilioHttpClient() if settings.sms_http_client ==
                                      "httpx" else LeanTwilioHttpClient())
        self.client = Client(settings.twilio_account_sid, settings.twilio_auth_token,
                             http_client=self.http)
        self.client.api.base_url = settings.twilio_api_base_url.rstrip("/")

    async def send(self, to: str, body: str) -> Receipt:
        kwargs: dict[str, str] = {"to": to, "body": body}
        if self.settings.twilio_messaging_service_sid:
            kwargs["messaging_service_sid"] = self.settings.twilio_messaging_service_sid
        else:
            kwargs["from_"] = self.settings.twilio_from
        if self.status_callbacks and self.settings.public_alerts_url:
            kwargs["status_callback"] = self.settings.public_alerts_url.rstrip("/") + \
                "/v1/sms/status"
        try:
            # A bounded request: with the heartbeat between retries, a delivery in `sending`
            # is touched at least every REQUEST_TIMEOUT + 12 s, below the stale threshold.
            async with asyncio.timeout(REQUEST_TIMEOUT):
                message = await self.client.messages.create_async(**kwargs)
        except TwilioRestException as exc:
            raise SmsError(exc.msg, code=exc.code, http_status=exc.status) from exc
        except (TimeoutError, OSError) as exc:
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
        except (TimeoutError, OSError) as exc:
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


def make_backend(settings: Settings, dev_outbox: Any, *,
                 status_callbacks: bool = True) -> SmsBackend:
    """The configured backend (`LOOKOUT_SMS_BACKEND`); `dev_outbox` is the service's table."""
    if settings.sms_backend == "twilio":
        return TwilioSmsBackend(settings, status_callbacks=status_callbacks)
    return OutboxSmsBackend(settings, dev_outbox)
