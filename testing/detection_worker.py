"""Run the detection worker as a real process against a broker, feed it events and read
its signals (used by the worker tests, the benchmarks and the backtest)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.broker import free_port, running_tansu
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.partition_keys import drug_check_result_key, overdose_report_key
from shared.settings import REPO_ROOT
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SIGNALS, partitions_of

tansu = running_tansu  # a fresh broker on a free port, topics created
__all__ = ["free_port", "tansu"]


class Worker:
    """`lookout worker detection` in its own process."""

    def __init__(self, bootstrap: str, var_dir: Path, env: dict[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.var_dir = var_dir
        self.log_path = var_dir / "detection-worker.log"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOOKOUT_ENV": "test",
            "LOOKOUT_VAR_DIR": str(var_dir),
            "LOOKOUT_KAFKA_BOOTSTRAP": bootstrap,
            "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.metrics_port = 0

    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.metrics_port = free_port()
        env = {**self.env, "LOOKOUT_DETECTION_METRICS_PORT": str(self.metrics_port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "detection"], env=env,
            cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def handled(self, agent: str) -> float:
        """Messages the agent has handled (ok or dead-lettered), from its /metrics."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith("lookout_agent_messages_total{") and f'agent="{agent}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


Event = OverdoseReportV1 | DrugCheckResultV1


def topic_of(event: Event) -> str:
    return OVERDOSE_REPORTS.name if isinstance(event, OverdoseReportV1) else \
        DRUGCHECK_RESULTS.name


def key_of(event: Event) -> bytes:
    """The message key ingest gives the event (`shared.partition_keys`)."""
    if isinstance(event, OverdoseReportV1):
        return overdose_report_key(event.region_id).encode()
    return drug_check_result_key(event.region_id).encode()


async def produce(bootstrap: str, events: Iterable[Event], *, rate: float = 0,
                  on_sent: Callable[[Event, float], None] | None = None) -> None:
    """Publish events keyed as the ingest relay does (`key_of`); `rate` events/s (0: as
    fast as possible); `on_sent(event, monotonic time)` after each is acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0 if rate
                                else 5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        pending = []
        for i, event in enumerate(events):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            fut = await producer.send(topic_of(event), event.model_dump_json().encode(),
                                      key=key_of(event))
            if on_sent is not None:
                await fut
                on_sent(event, time.monotonic())
            else:
                pending.append(fut)
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def send_raw(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def committed(bootstrap: str, topics: Iterable[str], group: str = "lookout-detection",
                    partitions: int | None = None) -> int:
    """How many messages of `topics` the group has committed (sum of committed offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()  # no subscription: only OffsetFetch, the group is not disturbed
    try:
        total = 0
        for topic in topics:
            for p in range(partitions_of(topic) if partitions is None else partitions):
                offset = await consumer.committed(TopicPartition(topic, p))
                total += offset or 0
        return total
    finally:
        await consumer.stop()


class SignalReader:
    """Reads signals.v1 (and any other topics) from the beginning in a background task."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = (SIGNALS.name,)) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.records: list[tuple[str, bytes, float]] = []  # (topic, value, monotonic time)
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None, fetch_max_wait_ms=5)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        async for message in self._consumer:
            self.records.append((message.topic, message.value or b"", time.monotonic()))

    def signals(self) -> list[dict[str, Any]]:
        return [json.loads(v) for t, v, _ in self.records if t == SIGNALS.name]

    async def wait_for(self, predicate: Callable[[SignalReader], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            await asyncio.sleep(0.05)
        return predicate(self)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - shutting down
                pass
        if self._consumer is not None:
            await self._consumer.stop()


def by_id(signals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Signals by event id; one id sent twice must have the same body."""
    out: dict[str, dict[str, Any]] = {}
    for s in signals:
        assert out.get(s["event_id"], s) == s, "a signal id sent twice with different bodies"
        out[s["event_id"]] = s
    return out


async def wait_started(workers: Sequence[Worker], reader: SignalReader, topic: str,
                       within: float) -> None:
    """A malformed message reaches the topic's DLQ (`reader` reads it): the workers'
    agents are consuming."""
    marker = f"not json {topic} {uuid.uuid4()}".encode()
    await send_raw(workers[0].bootstrap, topic, marker, b"garbage")
    ok = await reader.wait_for(
        lambda r: not all(w.alive() for w in workers)
        or any(v == marker for _, v, _ in r.records), within)
    for w in workers:
        assert w.alive(), w.log()[-3000:]
    assert ok, f"no dead letter from {topic} within {within}s\n{workers[0].log()[-3000:]}"


async def signals_of(workers: Sequence[Worker], feed: Callable[[SignalReader], Awaitable[None]],
                     want: int, *, start_within: float, within: float, settle: float
                     ) -> list[dict[str, Any]]:
    """The signals the started `workers` send for what `feed(reader)` publishes: once both
    input topics are consumed (`wait_started`), `feed` runs, then at most `within` s until
    `want` distinct signals came and `settle` s more (nothing more should come)."""
    reader = SignalReader(workers[0].bootstrap, (SIGNALS.name, OVERDOSE_REPORTS.dlq,
                                                 DRUGCHECK_RESULTS.dlq))
    await reader.start()
    try:
        await wait_started(workers, reader, OVERDOSE_REPORTS.name, start_within)
        await wait_started(workers, reader, DRUGCHECK_RESULTS.name, start_within)
        await feed(reader)
        await reader.wait_for(lambda r: len(by_id(r.signals())) >= want, within)
        await asyncio.sleep(settle)
        return reader.signals()
    finally:
        await reader.stop()


async def kill_mid_feed(bootstrap: str, events: Sequence[Event], kill: Callable[[], None], *,
                        rate: float, within: float, polls: int) -> int:
    """Publish the first half of `events`; wait until the detection group has committed at
    least half of that (`polls` looks 0.2 s apart), so a restart resumes from committed
    offsets with its tables recovered, not from zero; then publish the second half at `rate`
    events/s and call `kill()` once a quarter of it is acknowledged (at most `within` s),
    while the rest keeps arriving. Returns what was committed before the second half."""
    half = len(events) // 2
    await produce(bootstrap, events[:half])
    topics = (OVERDOSE_REPORTS.name, DRUGCHECK_RESULTS.name)
    for _ in range(polls):
        if await committed(bootstrap, topics) >= half // 2:
            break
        await asyncio.sleep(0.2)
    done = await committed(bootstrap, topics)
    sent = 0
    quarter = asyncio.Event()

    def count(_event: Event, _at: float) -> None:
        nonlocal sent
        sent += 1
        if sent >= (len(events) - half) // 4:
            quarter.set()

    feeding = asyncio.create_task(produce(bootstrap, events[half:], rate=rate, on_sent=count))
    await asyncio.wait_for(quarter.wait(), within)
    kill()
    await feeding
    return done
