"""Faust helpers: the app factory and a per-message loop that never lets one message kill
an agent (parse errors and repeated failures go to the topic's dead-letter topic)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiokafka
import faust
from aiokafka.helpers import create_ssl_context
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT
from pydantic import ValidationError

from shared.kafka import CachedPartitioner
from shared.metrics import AGENT_MESSAGES
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
HANDLER_ATTEMPTS = 3


async def fetched_end_offsets(bootstrap: str | list[str], listed: Mapping[TP, int],
                              security: Mapping[str, Any] | None = None) -> dict[TP, int]:
    """The end offset of each partition as a fetch reports it (its high watermark), given
    the end offsets ListOffsets gave (`listed`).

    Tansu (0.6, memory storage) answers ListOffsets(latest) with the base offset of the
    partition's last record batch + 1, so a partition whose last batch holds several records
    looks shorter than it is; its fetch responses carry the right high watermark. One fetch
    from `listed - 1` per partition, on a consumer of its own (no group).
    """
    if not listed:
        return {}
    probe = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=10,
                                      **(security or {}))
    await probe.start()
    try:
        tps = {tp: aiokafka.TopicPartition(tp.topic, tp.partition) for tp in listed}
        probe.assign(list(tps.values()))
        for tp, atp in tps.items():
            probe.seek(atp, max((listed[tp] or 0) - 1, 0))
        deadline = time.monotonic() + 30
        while any(probe.highwater(atp) is None for atp in tps.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("no fetch response for the end offsets of "
                                   f"{sorted(str(tp) for tp in tps)}")
            await probe.getmany(timeout_ms=100)
        return {tp: max(listed[tp] or 0, probe.highwater(atp) or 0) for tp, atp in tps.items()}
    finally:
        await probe.stop()


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust hard-codes the worker consumer's fetch_max_wait_ms=1500, which adds up to 1.5 s
    per hop on a quiet topic; use the app's `fetch_max_wait_ms` instead.

    Table recovery reads each changelog partition up to the end offset `_highwaters` gives
    (ListOffsets); on Tansu that stops short of the last batch's other records (see
    `fetched_end_offsets`), and the worker then handled messages against tables missing
    writes of committed messages (docs/detection.md, "State, recovery and replays"). So the
    end offsets are read from a fetch."""

    _bootstrap: list[str] = []
    _security: Mapping[str, Any] = {}

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.consumer.app, "fetch_max_wait_ms", 1500)
        consumer._fetch_max_wait_ms = int(wait)  # read when the fetcher starts
        self._bootstrap = faust_aiokafka.server_list(transport.url, transport.default_port)
        conf = self.consumer.app.conf
        self._security = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials,
                                                                     conf.ssl_context)
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 - faust's signature
        max_records: int | None = None,
    ) -> RecordMap:
        """faust hands aiokafka its live set of active partitions, which aiokafka reads again
        while it waits for records, and to aiokafka an empty set means every partition. When
        table recovery ends during that wait, faust pauses the changelog partitions (the set
        becomes empty) and aiokafka hands over the records it had prefetched for the paused
        source partitions: faust drops them, yet the consumer's position has moved past them,
        so they were never handled (the kill -9 test lost results 49..180 of a partition this
        way). So aiokafka gets a copy, taken when faust asks, and nothing when it is empty."""
        active = set(active_partitions)
        if not active:
            return {}
        return await super()._fetch_records(consumer, active, timeout, max_records)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:  # last stable offsets, not the ends
            return listed
        return await fetched_end_offsets(self._bootstrap, listed, self._security)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    fetch_max_wait_ms = 1500

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same TLS / SASL settings as `shared.kafka.client_security`, as Faust takes them."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(cafile=settings.kafka_ca_file or None)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(username=settings.kafka_username,
                                 password=settings.kafka_password, ssl_context=context,
                                 mechanism=settings.kafka_sasl_mechanism)


def make_faust_app(name: str, settings: Settings) -> faust.App:
    brokers = ";".join(f"kafka://{s}" for s in settings.bootstrap_servers.split(","))
    datadir = Path(settings.var_dir) / "faust" / name
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = _App(
        f"lookout-{name}",
        broker=brokers,
        web_enabled=False,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        broker_credentials=faust_credentials(settings),
        datadir=str(datadir),
        store="memory://",
        producer_acks=-1,
        producer_linger=settings.stream_producer_linger_ms / 1000,
        producer_partitioner=CachedPartitioner(),  # tables write the same keys over and over
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=0.5,
        broker_session_timeout=settings.stream_session_timeout,
        broker_heartbeat_interval=settings.stream_heartbeat_interval,
        broker_rebalance_timeout=settings.stream_session_timeout,
        # Stop without draining what the streams have taken: a message not yet acknowledged
        # is not committed, so the next start gets it again (every consumer is idempotent).
        # Draining a backlog on stop outlasted `lookout run`'s grace period and got the
        # worker killed.
        stream_wait_empty=False,
    )
    app.fetch_max_wait_ms = settings.stream_fetch_max_wait_ms
    return app


async def process_each(
    stream: Any,
    *,
    service: str,
    agent: str,
    parse: Callable[[bytes], T],
    handle: Callable[[T], Awaitable[None]],
    dlq: Any,
) -> None:
    """Handle a Faust stream of raw messages one by one.

    A message that does not parse is dead-lettered at once; one whose handler keeps failing
    is retried `HANDLER_ATTEMPTS` times with backoff, then dead-lettered. Either way the agent
    goes on with the next message.
    """
    async for event in stream.events():
        raw: bytes = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
        message = event.message
        try:
            parsed = parse(raw)
        except (ValidationError, ValueError) as exc:
            await dead_letter(dlq, message, raw, f"undecodable: {exc}", service, agent)
            continue
        await handle_with_retries(message, raw, parsed, service=service, agent=agent,
                                  handle=handle, dlq=dlq)


async def handle_with_retries(
    message: Any, raw: bytes, parsed: T, *, service: str, agent: str,
    handle: Callable[[T], Awaitable[None]], dlq: Any,
) -> None:
    """Run `handle` on one parsed message: retried `HANDLER_ATTEMPTS` times with backoff,
    then dead-lettered."""
    for attempt in range(1, HANDLER_ATTEMPTS + 1):
        try:
            await handle(parsed)
            AGENT_MESSAGES.labels(service, agent, "ok").inc()
            return
        except Exception as exc:
            if attempt == HANDLER_ATTEMPTS:
                await dead_letter(dlq, message, raw, f"handler failed: {exc!r}", service,
                                  agent)
            else:
                log.warning("%s: attempt %d failed: %r", agent, attempt, exc)
                await asyncio.sleep(0.2 * 2**attempt)


async def dead_letter(
    dlq: Any, message: Any, raw: bytes, reason: str, service: str, agent: str
) -> None:
    """Send `raw` to the dead-letter topic with the reason and its source in headers."""
    log.error(
        "%s: dead-lettering %s[%s]@%s: %s",
        agent, message.topic, message.partition, message.offset, reason[:300],
    )
    AGENT_MESSAGES.labels(service, agent, "dead_lettered").inc()
    await dlq.send(
        key=message.key,
        value=raw,
        headers={
            "lookout-error": reason[:1000].encode(),
            "lookout-source": f"{message.topic}:{message.partition}:{message.offset}".encode(),
        },
    )


_dead_letter = dead_letter  # the name services.alerts.agents imports
