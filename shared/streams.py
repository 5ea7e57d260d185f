"""Faust helpers: the app factory and a per-message loop that never lets one message kill
an agent (parse errors and repeated failures go to the topic's dead-letter topic). What the
app changes inside faust and aiokafka is in `shared.faust_patches`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import faust
from aiokafka.helpers import create_ssl_context
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential

from shared.faust_patches import PatchedApp
from shared.kafka import CachedPartitioner
from shared.metrics import AGENT_MESSAGES
from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
HANDLER_ATTEMPTS = 3


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
    app = PatchedApp(
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
    def log_failure(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed: %r", agent, state.attempt_number, exc)

    # The first attempt goes without tenacity: running a retry object costs more CPU than
    # many handlers (docs/performance.md); attempt 1 of the retry is the call made here.
    try:
        await handle(parsed)
    except Exception as exc:
        first_error = exc
    else:
        AGENT_MESSAGES.labels(service, agent, "ok").inc()
        return
    try:
        async for attempt in AsyncRetrying(stop=stop_after_attempt(HANDLER_ATTEMPTS),
                                           wait=wait_exponential(multiplier=0.4),
                                           before_sleep=log_failure, reraise=True):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    raise first_error
                await handle(parsed)
    except Exception as exc:
        await dead_letter(dlq, message, raw, f"handler failed: {exc!r}", service, agent)
        return
    AGENT_MESSAGES.labels(service, agent, "ok").inc()


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
