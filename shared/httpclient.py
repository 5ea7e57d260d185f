"""A small keep-alive HTTP/1.1 client on asyncio protocols, responses parsed by httptools
(uvicorn's parser, already a dependency).

Why not aiohttp: the SMS sender makes one short request per message, a thousand a second,
and aiohttp's per-request machinery (ClientRequest/ClientResponse objects, payload registry,
timers, traces, cookie handling) was most of the CPU of a whole send through the twilio SDK;
this client does the same request for a fraction of it (figures: docs/performance.md).
httpx's AsyncClient, the library we use elsewhere, was measured in the fan-out at about ten
times this client's CPU per message with 64 sends in flight (docs/alerts.md, "HTTP client";
encode/httpx#3215), too much for a short code's 100 messages/s on two cores: so this client
is kept for the sender, and `LOOKOUT_SMS_HTTP_CLIENT=httpx` runs the comparison again.

What it does: http and https (certificates verified), one request at a time per connection,
idle connections reused per host, Content-Length, chunked and close-delimited responses.
What it does not: proxies, redirects, compression, HTTP/2, retries. A request is **never
retried** on another connection (a POST may have been taken by the server before the
connection broke; the caller decides, e.g. the sender asks Twilio before sending again).
A connection whose request failed, was cancelled or timed out is closed, never reused.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_Key = tuple[str, str, int]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._headers_done = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server speaking out of turn
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._headers_done and self._body_until_close():
                self._complete()
            else:
                self._waiter.set_exception(exc or ConnectionResetError(
                    "connection closed before the response"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # an interim 1xx response: the real one follows
            self._headers, self._body, self._headers_done = {}, [], False
            return
        if not self._parser.should_keep_alive():
            self.close()
        self._complete()

    # ours
    def _body_until_close(self) -> bool:
        return "content-length" not in self._headers and \
            "chunked" not in self._headers.get("transfer-encoding", "").lower()

    def _complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(HttpResponse(self._parser.get_status_code(), self._headers,
                                                 b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> HttpResponse:
        assert self.transport is not None
        self._headers, self._body, self._headers_done = {}, [], False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            self._waiter = None


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[_Key, str, str]:
    """(scheme, host, port), the Host header and the path of a URL without its query (the
    same few URLs are asked again and again)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, parts.hostname, port), parts.netloc.rpartition("@")[2], \
        parts.path or "/"


class HttpClient:
    """Keep-alive connections per (scheme, host, port); one request at a time on each."""

    def __init__(self) -> None:
        self._idle: dict[_Key, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(self, method: str, url: str, *, headers: dict[str, str],
                      body: bytes = b"") -> HttpResponse:
        base, mark, query = url.partition("?")  # a query may hold a phone number: not cached
        key, host, target = _split(base)
        target += mark + query
        head = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        request = "".join(head).encode("latin-1") + body
        connection = await self._connection(key)
        try:
            response = await connection.exchange(request)
        except BaseException:  # failed, timed out or cancelled: the stream is in doubt
            connection.close()
            raise
        if not connection.closed:
            self._idle.setdefault(key, []).append(connection)
        return response

    async def _connection(self, key: _Key) -> _Connection:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        https = key[0] == "https"
        if https and self._ssl is None:
            self._ssl = ssl.create_default_context()
        _transport, connection = await asyncio.get_running_loop().create_connection(
            _Connection, key[1], key[2], ssl=self._ssl if https else None)
        return connection

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
