"""The latency benchmark's own clients, kept off its load generator's clock: a reader of
signals.v1 and drugcheck.results.v1 in a process of its own, and bare HTTP/1.1 keep-alive
connections for the POSTs (see `benchmarks.detection.latency`)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from shared.topics import DRUGCHECK_RESULTS, SIGNALS


class SignalReader:
    """Reads signals.v1 and drugcheck.results.v1 from the beginning in a process of its own,
    so that its clock is not held up by the load generator's loop (in one loop with an httpx
    client at 200 requests/s on a loaded machine, the signals were read up to seconds after
    they were on the topic). Per event id it keeps when it read the first signal naming it
    (wall clock) and that signal's Kafka timestamp (the worker's clock when it handed the
    signal to its producer), and the Kafka timestamp of the result itself (the relay's or
    the benchmark's send)."""

    def __init__(self, bootstrap: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_reader_main, args=(bootstrap, child), daemon=True)

    def start(self) -> None:
        self._proc.start()
        if self._conn.recv() != "ready":
            raise RuntimeError("signal reader did not start")

    async def finish(self, expected: set[str], within: float, drain: float = 0.0
                     ) -> tuple[dict[str, tuple[float, float]], dict[str, float],
                                list[dict[str, Any]]]:
        """Waits until every expected event has a signal and `drain` s have passed (or
        `within` s), stops the reader and returns (first signal per event: read, Kafka ts;
        Kafka ts per result; every distinct signal: id, pattern, evidence, read, Kafka ts)."""
        self._conn.send((sorted(expected), within, drain))
        first, relayed, signals = await asyncio.to_thread(self._conn.recv)
        await asyncio.to_thread(self._proc.join, 10)
        return first, relayed, signals


def _reader_main(bootstrap: str, conn: Any) -> None:
    asyncio.run(_read(bootstrap, conn))


async def _read(bootstrap: str, conn: Any) -> None:
    consumer = AIOKafkaConsumer(SIGNALS.name, DRUGCHECK_RESULTS.name, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, fetch_max_wait_ms=5)
    await consumer.start()
    first: dict[str, tuple[float, float]] = {}
    relayed: dict[str, float] = {}
    signals: dict[str, dict[str, Any]] = {}  # signal event id -> the first copy read
    conn.send("ready")
    expected: set[str] | None = None
    deadline = drained = float("inf")
    try:
        while expected is None or ((not expected <= first.keys() or time.time() < drained)
                                   and time.time() < deadline):
            if expected is None and conn.poll():
                ids, within, drain = conn.recv()
                expected, deadline = set(ids), time.time() + within
                drained = time.time() + drain
            batches = await consumer.getmany(timeout_ms=20)
            now = time.time()
            for messages in batches.values():
                for message in messages:
                    value = message.value or b""
                    if not value.startswith(b"{"):  # the readiness probe
                        continue
                    data = json.loads(value)
                    if message.topic == SIGNALS.name:
                        for evidence in data.get("evidence_event_ids", []):
                            first.setdefault(evidence, (now, message.timestamp / 1000))
                        signals.setdefault(data["event_id"], {
                            "pattern": data.get("pattern"),
                            "evidence": data.get("evidence_event_ids", []),
                            "read": now, "sent": message.timestamp / 1000})
                    else:
                        relayed.setdefault(data["event_id"], message.timestamp / 1000)
    finally:
        await consumer.stop()
    conn.send((first, relayed, list(signals.values())))


class BareHttp:
    """Bare HTTP/1.1 keep-alive connections for the load generator, with requests serialized
    before the clock starts: an httpx client cost the benchmark's loop about 1-2 ms of CPU
    per request, so at 200/s on a loaded machine it fell behind (27 requests/s offered
    instead of 200) and read its 202s late, up to seconds after the relay had published."""

    def __init__(self, url: str, limit: int = 64) -> None:
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(limit)

    def request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        async with self._slots:
            if self._idle:
                reader, writer = self._idle.pop()
                try:
                    return await self._exchange(reader, writer, request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass  # the server closed it while idle (keep-alive timeout): a new one
            reader, writer = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(reader, writer, request)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> tuple[int, bytes]:
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status, body

    def close(self) -> None:
        for _reader, writer in self._idle:
            writer.close()
