"""Kafka helpers: wait for the broker, create the registered topics, make producers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_fixed

from shared.settings import Settings
from shared.topics import ALL_TOPICS

log = logging.getLogger(__name__)
Security = Mapping[str, Any]


def client_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's connection options for the cluster's listener: TLS and SASL credentials
    from the settings (nothing for PLAINTEXT, the embedded broker's)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ca_file or None)
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_username,
                       sasl_plain_password=settings.kafka_password)
    return options


async def broker_answers(bootstrap: str, security: Security | None = None) -> bool:
    """True when the broker answers a Kafka metadata request."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000,
                                **(security or {}))
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, within: float = 30.0,
                          security: Security | None = None) -> None:
    """Return once a broker answers at `bootstrap`, asking every 0.2 s for `within` s."""
    poll = AsyncRetrying(stop=stop_after_delay(within), wait=wait_fixed(0.2),
                         retry=retry_if_result(lambda up: not up),
                         retry_error_callback=lambda _state: False)
    answered: bool = await poll(broker_answers, bootstrap, security)
    if not answered:
        raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {within:.0f}s")


async def ensure_topics(bootstrap: str, security: Security | None = None,
                        replication_factor: int = 1) -> list[str]:
    """Create every registered topic and its dead-letter topic; return the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for topic in ALL_TOPICS:
            for name in (topic.name, topic.dlq):
                if name not in existing:
                    wanted.append(NewTopic(name, topic.partitions, replication_factor))
        for new in wanted:
            try:
                await admin.create_topics([new])
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in wanted]
    finally:
        await admin.close()


class CachedPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client), remembering
    the partition of each key. aiokafka's murmur2 is pure Python: a large share of the
    outbox relay's CPU per message went to hashing the same few region keys again
    (docs/performance.md)."""

    def __init__(self) -> None:
        self._default = DefaultPartitioner()
        self._known: dict[tuple[bytes, tuple[int, ...]], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int],
                 available: list[int]) -> int:
        if key is None:  # random: nothing to remember
            return int(self._default(key, all_partitions, available))
        partitions = tuple(all_partitions)
        found = self._known.get((key, partitions))
        if found is None:
            if len(self._known) > 100_000:
                self._known.clear()
            found = self._known[key, partitions] = int(
                self._default(key, all_partitions, available))
        return found


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """acks=all, idempotent where the broker supports it (not Tansu's memory storage)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=settings.idempotent_producer,
        linger_ms=5,
        request_timeout_ms=10000,
        partitioner=CachedPartitioner(),
        **client_security(settings),
    )
