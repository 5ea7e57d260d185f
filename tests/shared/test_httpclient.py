"""shared.httpclient against a scripted loopback server: response framings, keep-alive
reuse, connections the server closes, and a request never sent twice."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from shared.httpclient import HttpClient

Handler = Callable[[bytes, int], Awaitable[bytes | None]]  # request, connection no. -> reply


class Server:
    """Reads one request at a time (head + Content-Length body) and writes what the handler
    returns, closing after a `Connection: close` answer; None closes without answering."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[int, bytes]] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append((number, request))
                reply = await self.handler(request, number)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def sync(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())
    return run


def ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@sync
async def test_post_form_and_keep_alive_reuse() -> None:
    async def handler(request: bytes, _n: int) -> bytes:
        return ok(b'{"echo": "' + request.rsplit(b"\r\n\r\n", 1)[1] + b'"}')

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        first = await client.request("POST", f"{url}/a.json?x=1", body=b"To=%2B1",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        second = await client.request("GET", f"{url}/b.json", headers={"Accept": "*/*"})
        client.close()
    assert first.status == 200 and first.body == b'{"echo": "To=%2B1"}'
    assert first.headers["content-type"] == "application/json"
    assert second.body == b'{"echo": ""}'
    assert server.connections == 1  # the second request reused the connection
    head = server.requests[0][1].split(b"\r\n")
    assert head[0] == b"POST /a.json?x=1 HTTP/1.1"
    assert any(line.startswith(b"Host: 127.0.0.1:") for line in head)
    assert b"Content-Length: 7" in head


@sync
async def test_chunked_close_delimited_and_interim_responses() -> None:
    replies = [
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"{}"),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]

    async def handler(_request: bytes, _n: int) -> bytes:
        return replies.pop(0)

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        chunked = await client.request("GET", f"{url}/", headers={})
        interim = await client.request("GET", f"{url}/", headers={})
        closed = await client.request("GET", f"{url}/", headers={})
        client.close()
    assert (chunked.status, chunked.body) == (201, b'{"a": 1}')
    assert (interim.status, interim.body) == (200, b"{}")
    assert (closed.status, closed.body) == (200, b"until the end")


@sync
async def test_connection_close_answer_is_not_reused() -> None:
    async def handler(_request: bytes, _n: int) -> bytes:
        return ok(b"x", "Connection: close\r\n")

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        for _ in range(3):
            assert (await client.request("GET", url, headers={})).body == b"x"
        client.close()
    assert server.connections == 3


@sync
async def test_idle_connection_closed_by_server_is_replaced() -> None:
    async def handler(_request: bytes, n: int) -> bytes | None:
        return ok(str(n).encode())

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        assert (await client.request("GET", url, headers={})).body == b"1"
        for connections in client._idle.values():  # the server's keep-alive timeout, in effect
            for connection in connections:
                assert connection.transport is not None
                connection.transport.abort()
        await asyncio.sleep(0.05)
        assert (await client.request("GET", url, headers={})).body == b"2"
        client.close()


@sync
async def test_broken_connection_raises_and_never_resends() -> None:
    """The server takes the POST and hangs up without answering: the caller gets an OSError
    and the request was seen exactly once (a retry could send an SMS twice)."""
    async def handler(_request: bytes, _n: int) -> bytes | None:
        return None

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        with pytest.raises(OSError):
            await client.request("POST", f"{url}/Messages.json", headers={}, body=b"Body=hi")
        await asyncio.sleep(0.05)
        client.close()
    assert len(server.requests) == 1


@sync
async def test_timeout_closes_the_connection() -> None:
    slow = asyncio.Event()

    async def handler(_request: bytes, n: int) -> bytes:
        if n == 1:
            await slow.wait()
        return ok(str(n).encode())

    server = Server(handler)
    async with server as url:
        client = HttpClient()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.request("GET", url, headers={})
        # The late answer must not be read as the next request's: a fresh connection.
        slow.set()
        assert (await client.request("GET", url, headers={})).body == b"2"
        client.close()
    assert server.connections == 2


@sync
async def test_garbage_is_a_connection_error() -> None:
    async def handler(_request: bytes, _n: int) -> bytes:
        return b"NOT HTTP AT ALL\r\n\r\n"

    async with Server(handler) as url:
        client = HttpClient()
        with pytest.raises(ConnectionError):
            await client.request("GET", url, headers={})
        client.close()
