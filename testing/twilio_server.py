"""Fake Twilio Programmable Messaging API for tests, benchmarks and local development.

Speaks enough of Twilio's 2010-04-01 REST API (same paths, JSON shapes and error codes) that the
real ``twilio`` Python SDK can talk to it::

    with FakeTwilioServer() as server:
        client = Client(server.account_sid, server.auth_token)
        client.api.base_url = server.url          # or: client = server.twilio_client()
        client.messages.create(to="+16045550123", from_="+15005550006", body="hi")
        assert server.messages()[0]["body"] == "hi"

Twilio routes (HTTP Basic auth ``AccountSid:AuthToken``):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form: To, From | MessagingServiceSid,
  Body | MediaUrl, StatusCallback) -> 201 Message resource
* ``GET  /2010-04-01/Accounts/{AccountSid}/Messages.json`` (To, From, Page, PageSize) -> page
* ``GET|DELETE /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``

Magic ``To`` numbers (as with Twilio test credentials): +15005550001 -> 21211,
+15005550002 -> 21612, +15005550003 -> 21408, +15005550004 -> 21610, +15005550009 -> 21614.
Magic ``From``: +15005550001 -> 21212, +15005550007 -> 21606, +15005550008 -> 21611.

Control endpoints (no auth), all JSON:

* ``GET /_fake/health``, ``GET /_fake/messages[?to=]``, ``DELETE /_fake/messages``
* ``GET /_fake/callbacks`` (recent status-callback attempts), ``GET /_fake/stats`` (counters)
* ``POST /_fake/opt-out`` / ``POST /_fake/opt-in`` ``{"to": "+1..."}`` (opted-out -> 21610)
* ``POST /_fake/faults`` ``{"status": 429|500|503, "count": N, "code"?: int,
  "retry_after"?: seconds}`` -> the next N Twilio API requests fail; ``DELETE /_fake/faults``
* ``POST /_fake/fail-rules`` ``{"suffix": "0003", "error_code": 30003,
  "status"?: "undelivered"|"failed"}``; ``DELETE /_fake/fail-rules``
* ``POST /_fake/reset`` (everything back to the state at construction)

Accepted messages progress ``queued`` (``accepted`` with a Messaging Service) -> ``sent`` ->
``delivered`` (or ``undelivered``/``failed`` per fail rule), one step per ``callback_delay``.
With a ``StatusCallback`` URL each step after acceptance is POSTed there, form-encoded and signed
with ``X-Twilio-Signature`` exactly as Twilio does (HMAC-SHA1 over URL + sorted params).

Run standalone: ``python -m testing.twilio_server --port 8010``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hmac
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "FailRule",
    "FakeTwilio",
    "FakeTwilioServer",
    "count_segments",
    "create_app",
    "main",
]

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"  # the fake server's default credential
#: Sender assigned to messages sent through a Messaging Service without ``From``.
MESSAGING_SERVICE_SENDER = "+15005550006"
MAX_BODY_CHARS = 1600
#: Concurrent status-callback POSTs.
CALLBACK_WORKERS = 16
CALLBACK_TIMEOUT = 5.0
#: How many status-callback attempts ``/_fake/callbacks`` remembers.
CALLBACK_LOG_SIZE = 100_000

DeliveryStatus = Literal["undelivered", "failed"]

# --------------------------------------------------------------------------------------------
# Error catalogue
# --------------------------------------------------------------------------------------------

_MAGIC_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: "
        "{from_} via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' "
        "number: {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number {to} is not a valid mobile number"),
}
_MAGIC_FROM: dict[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
        "sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone "
        "number for this destination.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}
_FAULT_DEFAULTS: dict[int, tuple[int, str]] = {
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
}
DELIVERY_ERRORS: dict[int, str] = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

# A permissive phone-number shape check: optional '+', 7-15 digits, common separators allowed.
_PHONE_RE = re.compile(r"\+?\d{7,15}")
_PHONE_SEPARATORS = str.maketrans("", "", " -().")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # whitespace/control characters never belong in a URL


def _valid_callback_url(url: str) -> bool:
    """Twilio's StatusCallback rules: http(s), a hostname without underscores, <= 4000 chars."""
    if len(url) > 4000 or _UNSAFE.search(url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in parts.netloc


def _twilio_error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Twilio's legacy REST error body (what the SDK turns into ``TwilioRestException``)."""
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Response(
        json.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


# --------------------------------------------------------------------------------------------
# Segment counting (GSM-7 160/153 septets, UCS-2 70/67 UTF-16 code units)
# --------------------------------------------------------------------------------------------

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # each costs two septets (escape + char)
_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENDED


def _split(widths: Iterable[int], total: int, single: int, multi: int) -> int:
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:  # a character (escape pair / surrogate pair) never straddles segments
        if used + width > multi:
            segments += 1
            used = 0
        used += width
    return segments


@functools.lru_cache(maxsize=64)
def _rfc2822_second(moment: datetime) -> str:
    return format_datetime(moment)


def _rfc2822(moment: datetime) -> str:
    """Twilio's date format (whole seconds), cached per second: a busy second formats once."""
    return _rfc2822_second(moment.replace(microsecond=0))


@functools.lru_cache(maxsize=256)
def count_segments(body: str) -> int:
    """Number of SMS segments Twilio bills for ``body`` (no smart-encoding substitution)."""
    if not body:
        return 1
    if _GSM7_ALL.issuperset(body):
        widths = [2 if ch in _GSM7_EXTENDED else 1 for ch in body]
        return _split(widths, sum(widths), 160, 153)
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return _split(widths, sum(widths), 70, 67)


# --------------------------------------------------------------------------------------------
# Status-callback HTTP client
# --------------------------------------------------------------------------------------------

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _FormPoster:
    """Minimal keep-alive HTTP/1.1 client that POSTs form bodies (http and https).

    Used instead of ``httpx.AsyncClient`` for status callbacks: measured here it costs ~0.12 ms
    CPU per request versus ~1-2.5 ms for httpx/httpcore, which matters at >= 1,000 msg/s
    (two callbacks per message). Handles Content-Length, chunked and close-delimited responses.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> int:
        """POST ``params`` form-encoded to ``url``; returns the HTTP status code."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or _UNSAFE.search(url):
            raise ValueError(f"unsupported callback URL {url!r}")
        https = parts.scheme == "https"
        key = (parts.scheme, parts.hostname, parts.port or (443 if https else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = urlencode(params).encode()
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        data = "\r\n".join(lines).encode("latin-1") + body
        for attempt in (0, 1):
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
            reused = conn is not None
            if conn is None:
                if https and self._ssl is None:
                    self._ssl = ssl.create_default_context()
                async with asyncio.timeout(self.timeout):
                    conn = await asyncio.open_connection(
                        key[1], key[2], ssl=self._ssl if https else None
                    )
            try:
                async with asyncio.timeout(self.timeout):
                    status, keep_alive = await self._exchange(conn, data)
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError):
                conn[1].close()
                if reused and attempt == 0:
                    continue  # the receiver closed an idle keep-alive connection: reconnect once
                raise
            if keep_alive:
                self._idle.setdefault(key, []).append(conn)
            else:
                conn[1].close()
            return status
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(conn: _Conn, data: bytes) -> tuple[int, bool]:
        reader, writer = conn
        writer.write(data)
        await writer.drain()
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            version, status_text = head[0].split(" ", 2)[:2]
            status = int(status_text)
            if status >= 200:
                break  # skip interim 1xx responses
        fields: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
        if "chunked" in fields.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                await reader.readexactly(size + 2)
        elif "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif status not in (204, 304):
            await reader.read()  # body delimited by connection close
            keep_alive = False
        return status, keep_alive

    def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailRule:
    """Messages whose ``To`` ends with ``suffix`` end in ``status`` with ``error_code``."""

    suffix: str
    error_code: int = 30003
    status: DeliveryStatus = "undelivered"


def _by_suffix_length(rules: Iterable[FailRule]) -> list[FailRule]:
    return sorted(rules, key=lambda r: len(r.suffix), reverse=True)  # most specific first


@dataclass
class _Fault:
    status: int
    remaining: int
    code: int
    message: str
    retry_after: float | None = None


@dataclass(slots=True, eq=False)
class _Message:
    sid: str
    to: str
    from_: str | None
    body: str
    status: str
    num_segments: int
    num_media: int
    messaging_service_sid: str | None
    status_callback: str | None
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    final: FailRule | None = None
    uri: str = ""

    def resource(self, account_sid: str) -> dict[str, Any]:
        accepted = self.status == "accepted"  # Messaging Service has not picked a sender yet
        return {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent) if self.date_sent else None,
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_ if not accepted else None,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(self.num_media),
            "num_segments": "0" if accepted else str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": self.uri[: -len(".json")] + "/Media.json"},
            "to": self.to,
            "uri": self.uri,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": self.num_segments,
            "created": self.date_created.isoformat(),
            "error_code": self.error_code,
            "messaging_service_sid": self.messaging_service_sid,
            "status_callback": self.status_callback,
        }


@dataclass(eq=False)
class FakeTwilio:
    """In-memory state and request handlers of one fake Twilio account (``app.state.twilio``).

    Mutators take ``lock`` so test code in another thread can use them while uvicorn serves.
    """

    account_sid: str
    auth_token: str
    callback_delay: float = 0.05
    initial_fail_rules: tuple[FailRule, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _messages: dict[str, _Message] = field(default_factory=dict, repr=False)
    _opted_out: set[str] = field(default_factory=set, repr=False)
    _faults: list[_Fault] = field(default_factory=list, repr=False)
    _fail_rules: list[FailRule] = field(default_factory=list, repr=False)
    _callbacks: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=CALLBACK_LOG_SIZE), repr=False
    )
    _stats: Counter[str] = field(default_factory=Counter, repr=False)
    _queue: asyncio.Queue[tuple[_Message, list[str], int]] | None = field(default=None, repr=False)
    _workers: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _sender: _FormPoster | None = field(default=None, repr=False)
    _failing_urls: set[str] = field(default_factory=set, repr=False)
    _closing: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self._fail_rules = _by_suffix_length(self.initial_fail_rules)
        self._auth_b64 = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        self._validator = RequestValidator(self.auth_token)
        self._base = f"/{API_VERSION}/Accounts/{self.account_sid}"

    # ---- control API (thread-safe) -----------------------------------------------------

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [m.summary() for m in self._messages.values() if to is None or m.to == to]

    def message_count(self) -> int:
        """len(messages()) without copying them: for polling while thousands arrive."""
        with self.lock:
            return len(self._messages)

    def callbacks(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self._callbacks)

    def stats(self) -> dict[str, int]:
        """Counters: accepted, rejected.<code>, fault.<status>, auth_failed, callback.ok|error."""
        with self.lock:
            return dict(self._stats)

    def clear_messages(self) -> int:
        with self.lock:
            n = len(self._messages)
            self._messages.clear()
            self._callbacks.clear()
            self._stats.clear()
            return n

    def opt_out(self, number: str) -> None:
        with self.lock:
            self._opted_out.add(number)

    def opt_in(self, number: str) -> None:
        with self.lock:
            self._opted_out.discard(number)

    def add_fault(
        self,
        status: int,
        count: int = 1,
        *,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``count`` Twilio API requests fail with HTTP ``status``."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError("fault status must be 4xx/5xx and count >= 1")
        default_code, default_message = _FAULT_DEFAULTS.get(status, (20000 + status, "Error"))
        fault = _Fault(status, count, code or default_code, message or default_message, retry_after)
        with self.lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def add_fail_rule(self, rule: FailRule) -> None:
        with self.lock:  # swap in a new list: the event loop iterates it without the lock
            self._fail_rules = _by_suffix_length([*self._fail_rules, rule])

    def clear_fail_rules(self) -> None:
        with self.lock:
            self._fail_rules = []

    def reset(self) -> None:
        with self.lock:
            self._messages.clear()
            self._callbacks.clear()
            self._stats.clear()
            self._opted_out.clear()
            self._faults.clear()
            self._fail_rules = _by_suffix_length(self.initial_fail_rules)

    # ---- helpers ---------------------------------------------------------------------------

    def _take_fault(self) -> _Fault | None:
        if not self._faults:  # fast path, no lock
            return None
        with self.lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def _guard(self, request: Request) -> Response | None:
        """Injected faults, then HTTP Basic auth and the AccountSid in the path."""
        fault = self._take_fault()
        if fault is not None:
            headers = None
            if fault.retry_after is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"}
            with self.lock:
                self._stats[f"fault.{fault.status}"] += 1
            return _twilio_error(fault.status, fault.code, fault.message, headers)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "basic" and hmac.compare_digest(
            credentials.strip().encode(), self._auth_b64.encode()
        )
        if not ok or request.path_params.get("account_sid") != self.account_sid:
            with self.lock:
                self._stats["auth_failed"] += 1
            return _twilio_error(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return None

    def _fail_rule_for(self, to: str) -> FailRule | None:
        for rule in self._fail_rules:
            if to.endswith(rule.suffix):
                return rule
        return None

    # ---- Twilio routes ---------------------------------------------------------------------

    async def messages_collection(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        if request.method == "POST":
            return await self._create(request)
        return self._list(request)

    def _reject(self, code: int, message: str) -> Response:
        with self.lock:
            self._stats[f"rejected.{code}"] += 1
        return _twilio_error(400, code, message)

    async def _create(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", errors="replace")
        form: dict[str, str] = {}
        media: list[str] = []
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key == "MediaUrl":
                media.append(value)
            else:
                form.setdefault(key, value)
        to = form.get("To", "").strip()
        from_ = form.get("From", "").strip() or None
        service = form.get("MessagingServiceSid", "").strip() or None
        body = form.get("Body", "")
        if not to:
            return self._reject(21604, "A 'To' phone number is required.")
        if from_ is None and service is None:
            return self._reject(21603, "A 'From' phone number is required.")
        if not body and not media:
            return self._reject(21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return self._reject(
                21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if from_ is not None and from_ in _MAGIC_FROM:
            code, text = _MAGIC_FROM[from_]
            return self._reject(code, text.format(to=to, from_=from_))
        if to in _MAGIC_TO:
            code, text = _MAGIC_TO[to]
            return self._reject(code, text.format(to=to, from_=from_))
        address = to.split(":", 1)[1] if ":" in to else to  # e.g. whatsapp:+1...
        if not _PHONE_RE.fullmatch(address.translate(_PHONE_SEPARATORS)):
            return self._reject(21211, f"The 'To' number {to} is not a valid phone number.")
        callback = form.get("StatusCallback") or None
        if callback is not None and not _valid_callback_url(callback):
            return self._reject(21609, f"The StatusCallback URL {callback} is not a valid URL.")
        if to in self._opted_out:
            return self._reject(21610, "Attempt to send to unsubscribed recipient")

        now = datetime.now(UTC)
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        msg = _Message(
            sid=sid,
            to=to,
            from_=from_ or (MESSAGING_SERVICE_SENDER if service else None),
            body=body,
            status="accepted" if service else "queued",
            num_segments=count_segments(body),
            num_media=len(media),
            messaging_service_sid=service,
            status_callback=callback,
            date_created=now,
            date_updated=now,
            final=self._fail_rule_for(to),
            uri=f"{self._base}/Messages/{sid}.json",
        )
        with self.lock:
            self._messages[sid] = msg
            self._stats["accepted"] += 1
        resource = msg.resource(self.account_sid)
        self._schedule(msg)
        return _json(resource, 201)

    def _list(self, request: Request) -> Response:
        q = request.query_params
        to, from_ = q.get("To"), q.get("From")
        try:
            page_size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            return _twilio_error(400, 20001, "Invalid paging parameter")
        with self.lock:
            matching = [
                m
                for m in reversed(self._messages.values())  # newest first, like Twilio
                if (to is None or m.to == to) and (from_ is None or m.from_ == from_)
            ]
        start = page * page_size
        chunk = matching[start : start + page_size]
        filters = {k: v for k, v in (("To", to), ("From", from_)) if v is not None}

        def page_uri(n: int) -> str:
            return f"{self._base}/Messages.json?" + urlencode(
                {**filters, "PageSize": page_size, "Page": n}
            )

        has_next = start + page_size < len(matching)
        payload = {
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            "messages": [m.resource(self.account_sid) for m in chunk],
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": page_uri(page),
        }
        return _json(payload)

    async def message_instance(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        sid = request.path_params["sid"]
        with self.lock:
            msg = self._messages.get(sid)
            if msg is not None and request.method == "DELETE":
                del self._messages[sid]
                return Response(status_code=204)
        if msg is None:
            return _twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return _json(msg.resource(self.account_sid))

    # ---- status progression and callbacks ---------------------------------------------------

    def _steps(self, msg: _Message) -> list[str]:
        rule = msg.final
        if rule is None:
            return ["sent", "delivered"]
        return ["failed"] if rule.status == "failed" else ["sent", rule.status]

    def _advance(self, msg: _Message, status: str) -> None:
        now = datetime.now(UTC)
        with self.lock:
            msg.status = status
            msg.date_updated = now
            if status == "sent" or (status == "delivered" and msg.date_sent is None):
                msg.date_sent = now
            if status in ("undelivered", "failed") and msg.final is not None:
                msg.error_code = msg.final.error_code
                msg.error_message = DELIVERY_ERRORS.get(msg.final.error_code)

    def _schedule(self, msg: _Message) -> None:
        """Timers drive the status steps; callbacks go through a small worker pool."""
        steps = self._steps(msg)
        delay = max(self.callback_delay, 0.0)
        loop = asyncio.get_running_loop()
        if msg.status_callback is None:
            for i, status in enumerate(steps, start=1):
                loop.call_later(delay * i, self._advance, msg, status)
        else:
            loop.call_later(delay, self._enqueue, msg, steps, 0)

    def _enqueue(self, msg: _Message, steps: list[str], index: int) -> None:
        if msg.sid not in self._messages:
            return  # deleted or reset meanwhile: no more callbacks
        self._advance(msg, steps[index])
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._sender = _FormPoster(CALLBACK_TIMEOUT)
            self._workers = [
                asyncio.create_task(self._callback_worker(self._queue, self._sender))
                for _ in range(CALLBACK_WORKERS)
            ]
        self._queue.put_nowait((msg, steps, index))

    async def _callback_worker(
        self, queue: asyncio.Queue[tuple[_Message, list[str], int]], sender: _FormPoster
    ) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            msg, steps, index = await queue.get()
            try:
                await self._post_callback(sender, msg, steps[index])
            except Exception:
                logger.exception("status callback for %s crashed", msg.sid)
            if index + 1 < len(steps):  # next step only after this POST: callbacks stay ordered
                loop.call_later(max(self.callback_delay, 0.0), self._enqueue, msg, steps, index + 1)

    def callback_params(self, msg: _Message, status: str) -> dict[str, str]:
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

    async def _post_callback(self, sender: _FormPoster, msg: _Message, status: str) -> None:
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
        with self.lock:
            self._callbacks.append(record)
            self._stats[f"callback.{outcome}"] += 1

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

    # ---- control routes --------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        name, method = request.path_params["name"], request.method
        if method == "GET" and name == "health":
            return _json({"ok": True, "account_sid": self.account_sid})
        if method == "GET" and name == "messages":
            return _json(self.messages(request.query_params.get("to")))
        if method == "GET" and name == "callbacks":
            return _json(self.callbacks())
        if method == "GET" and name == "stats":
            return _json(self.stats())
        if method == "DELETE" and name == "messages":
            return _json({"deleted": self.clear_messages()})
        if method == "DELETE" and name == "faults":
            self.clear_faults()
            return _json({"ok": True})
        if method == "DELETE" and name == "fail-rules":
            self.clear_fail_rules()
            return _json({"ok": True})
        if method == "POST" and name == "reset":
            self.reset()
            return _json({"ok": True})
        if method != "POST" or name not in ("opt-out", "opt-in", "faults", "fail-rules"):
            return _json({"error": f"no such control endpoint: {method} /_fake/{name}"}, 404)
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            if name in ("opt-out", "opt-in"):
                number = str(data["to"])
                (self.opt_out if name == "opt-out" else self.opt_in)(number)
            elif name == "faults":
                retry = data.get("retry_after")
                self.add_fault(
                    int(data["status"]),
                    int(data.get("count", 1)),
                    code=int(data["code"]) if "code" in data else None,
                    message=data.get("message"),
                    retry_after=float(retry) if retry is not None else None,
                )
            else:
                status = data.get("status", "undelivered")
                if status not in ("undelivered", "failed"):
                    raise ValueError("status must be 'undelivered' or 'failed'")
                rule = FailRule(str(data["suffix"]), int(data.get("error_code", 30003)), status)
                self.add_fail_rule(rule)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            return _json({"error": f"bad request: {exc!r}"}, 400)
        return _json({"ok": True})


# --------------------------------------------------------------------------------------------
# App factory
# --------------------------------------------------------------------------------------------


def create_app(
    account_sid: str = DEFAULT_ACCOUNT_SID,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    *,
    callback_delay: float = 0.05,
    fail_rules: Iterable[FailRule] = (),
) -> Starlette:
    """Build the fake Twilio ASGI app; its state is ``app.state.twilio`` (a :class:`FakeTwilio`)."""
    fake = FakeTwilio(account_sid, auth_token, callback_delay, tuple(fail_rules))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await fake.aclose()

    base = f"/{API_VERSION}/Accounts/{{account_sid}}"
    routes = [
        Route(f"{base}/Messages.json", fake.messages_collection, methods=["GET", "POST"]),
        Route(f"{base}/Messages/{{sid}}.json", fake.message_instance, methods=["GET", "DELETE"]),
        Route("/_fake/{name}", fake.control, methods=["GET", "POST", "DELETE"]),
    ]
    app = _FakeApp(routes=routes, lifespan=lifespan)
    app.state.twilio = fake
    app.fast_path = f"{fake._base}/Messages.json"
    return app


class _FakeApp(Starlette):
    """Starlette, except that creating a message (the hot path of a fan-out benchmark, which
    runs on the same cores as the code under test) skips the middleware and the router."""

    fast_path = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and \
                scope["path"] == self.fast_path:
            fake: FakeTwilio = self.state.twilio
            scope["path_params"] = {"account_sid": fake.account_sid}
            response = await fake.messages_collection(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# --------------------------------------------------------------------------------------------
# Threaded runner
# --------------------------------------------------------------------------------------------


class FakeTwilioServer:
    """Runs the fake on ``host`` (loopback by default) in a background uvicorn thread.

    ``port=0`` picks a free port; ``.url`` is the value for ``client.api.base_url``.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_delay: float = 0.05,
        fail_rules: Iterable[FailRule] = (),
        log_level: str = "warning",
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.app = create_app(
            account_sid, auth_token, callback_delay=callback_delay, fail_rules=fail_rules
        )
        self.fake: FakeTwilio = self.app.state.twilio
        self._requested_port = port
        self._log_level = log_level
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeTwilioServer:
        if self._thread is not None:
            raise RuntimeError("FakeTwilioServer already started")
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # is TCP; with proto=0 Nagle + delayed ACK add ~40 ms to every response.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=self._log_level, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-twilio", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("fake Twilio server failed to start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Convenience pass-throughs to the in-memory state (thread-safe).

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        return self.fake.messages(to)

    def message_count(self) -> int:
        return self.fake.message_count()

    def callbacks(self) -> list[dict[str, Any]]:
        return self.fake.callbacks()

    def stats(self) -> dict[str, int]:
        return self.fake.stats()

    def opt_out(self, number: str) -> None:
        self.fake.opt_out(number)

    def add_fault(self, status: int, count: int = 1, **kwargs: Any) -> None:
        self.fake.add_fault(status, count, **kwargs)

    def add_fail_rule(self, rule: FailRule) -> None:
        self.fake.add_fail_rule(rule)

    def reset(self) -> None:
        self.fake.reset()

    def twilio_client(self) -> Any:
        """A real ``twilio.rest.Client`` pointed at this server."""
        from twilio.rest import Client

        client = Client(self.account_sid, self.auth_token)
        client.api.base_url = self.url
        return client


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _parse_fail_rule(text: str) -> FailRule:
    """``SUFFIX[:CODE[:STATUS]]``, e.g. ``0003:30003`` or ``9999:30008:failed``."""
    parts = text.split(":")
    try:
        code = int(parts[1]) if len(parts) > 1 else 30003
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad error code in {text!r}") from exc
    status = parts[2] if len(parts) > 2 else "undelivered"
    if not parts[0] or len(parts) > 3 or status not in ("undelivered", "failed"):
        raise argparse.ArgumentTypeError(f"expected SUFFIX[:CODE[:undelivered|failed]]: {text!r}")
    return FailRule(parts[0], code, "failed" if status == "failed" else "undelivered")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Twilio Messages API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument(
        "--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID", DEFAULT_ACCOUNT_SID)
    )
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", DEFAULT_AUTH_TOKEN)
    )
    parser.add_argument("--callback-delay", type=float, default=0.05)
    parser.add_argument(
        "--fail-rule",
        type=_parse_fail_rule,
        action="append",
        default=[],
        metavar="SUFFIX[:CODE[:STATUS]]",
        help="To numbers ending in SUFFIX end undelivered/failed with CODE (repeatable)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    app = create_app(
        args.account_sid,
        args.auth_token,
        callback_delay=args.callback_delay,
        fail_rules=args.fail_rule,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
