"""The status callbacks' HTTP client."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from testing.twilio_server.catalog import UNSAFE_URL_CHARS

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class FormPoster:
    """Minimal keep-alive HTTP/1.1 client that POSTs form bodies (http and https).

    Used instead of ``httpx.AsyncClient`` for status callbacks: it costs the fake a fraction
    of httpx's CPU per request, which matters when the fake shares the cores with the code
    under test in a fan-out benchmark, two callbacks per message (docs/testing.md). Handles
    Content-Length, chunked and close-delimited responses.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> int:
        """POST ``params`` form-encoded to ``url``; returns the HTTP status code."""
        parts = urlsplit(url)
        if (parts.scheme not in ("http", "https") or not parts.hostname
                or UNSAFE_URL_CHARS.search(url)):
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
