"""The outbox relay (`lookout relay`): publishes every service's outbox table to Kafka
(`shared.outbox`), and keeps the database the source of truth when the broker loses data.

Broker epochs. The embedded broker keeps everything in memory: restarted, it has no
topics, changelogs or DLQs, while the outbox rows are marked published. For each outbox
table the relay keeps a marker topic on the broker (`relay.<table>.epoch.v1`, one record:
the epoch id) and the epoch in the database (`relay_epochs`). Before each round that has
rows to send, and every second when idle, it asks the broker for its topic list: a marker
missing means the broker lost what was published, so the relay creates the registered
topics again and marks every row published within `LOOKOUT_RELAY_RETENTION_HOURS`
unpublished in one transaction with the new epoch, then writes the new marker; those rows
go out again in id order, so per-key order holds. Published rows older than the retention
are deleted. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from shared.kafka import make_producer
from shared.outbox import PUBLISH_ERRORS, measure_lag, publish_pending
from shared.relay.epochs import BrokerWatch, RelayEpoch, marker_topic, purge_published
from shared.relay.lease import TableLease
from shared.relay.reconcile import reconcile
from shared.settings import Settings

__all__ = ["RelayEpoch", "marker_topic", "purge_published", "reconcile", "run_relay"]

log = logging.getLogger(__name__)

BROKER_CHECK_INTERVAL = 1.0  # s, when idle (and before every round that sends)
PURGE_INTERVAL = 60.0  # s


async def run_relay(settings: Settings, models: list[Any],
                    stop: asyncio.Event | None = None) -> None:
    """Relay the given outbox tables until `stop`, backing off while the broker is away.
    Several relays may run: each table is published by the one holding its lease, the
    others stand by (`TableLease`); a relay taking a table over first marks what the
    previous one sent but did not mark (`reconcile`)."""
    relay = _Relay(settings, models, stop or asyncio.Event())
    try:
        while not relay.stop.is_set():
            # A round that fails on the broker is tried again after a backoff that doubles
            # (with jitter) up to MAX_BACKOFF; it starts over after a round that went well.
            await AsyncRetrying(retry=retry_if_exception_type((KafkaError, OSError)),
                                wait=_backoff, before_sleep=relay.broker_lost,
                                sleep=relay.sleep)(relay.round)
    finally:
        await relay.close()


FIRST_BACKOFF = 0.2  # s
MAX_BACKOFF = 10.0  # s


def _backoff(state: RetryCallState) -> float:
    return _base_backoff(state) * (1 + random.random() / 2)


def _base_backoff(state: RetryCallState) -> float:
    return min(FIRST_BACKOFF * 2.0 ** (state.attempt_number - 1), MAX_BACKOFF)


class _Relay:
    """What one relay process holds between its rounds."""

    def __init__(self, settings: Settings, models: list[Any], stop: asyncio.Event) -> None:
        self.settings, self.models, self.stop = settings, models, stop
        self.producer: Any = None
        self.leases = {m: TableLease(settings, m.__tablename__) for m in models}
        self.active: list[Any] = []
        self.unreconciled: set[Any] = set()
        self.watch = BrokerWatch(settings, self.active)
        self.last_lease = self.last_lag = self.last_purge = 0.0

    async def sleep(self, seconds: float) -> None:
        await _sleep_or_stop(self.stop, seconds)

    async def take_leases(self) -> None:
        now = time.monotonic()
        if len(self.active) < len(self.models) and (
                not self.active
                or now - self.last_lease > self.settings.relay_standby_poll_seconds):
            for model in self.models:
                if model not in self.active and await asyncio.to_thread(
                        self.leases[model].acquire):
                    log.info("relay: active for %s", model.__tablename__)
                    self.active.append(model)
                    self.unreconciled.add(model)
            self.last_lease = now

    async def round(self) -> None:
        """Publish what is pending in the tables this relay holds (and the checks that fall
        due), then wait for the next poll unless a full batch says more is waiting."""
        if self.stop.is_set():
            return
        await self.take_leases()
        if not self.active:
            await self.sleep(self.settings.relay_standby_poll_seconds)
            return
        settings, watch = self.settings, self.watch
        if self.producer is None:
            await watch.check()
            self.producer = make_producer(settings)
            await self.producer.start()
            log.info("relay connected to %s", settings.bootstrap_servers)
        for model in list(self.unreconciled):
            await reconcile(settings, model)
            self.unreconciled.discard(model)
        more = False
        for model in self.active:
            published = await publish_pending(settings, self.producer, model, watch.check)
            more = more or published >= settings.relay_batch_size
        now = time.monotonic()
        if now - watch.checked_at > BROKER_CHECK_INTERVAL:
            await watch.check()
        if now - self.last_lag > 1:
            for model in list(self.active):
                if not await asyncio.to_thread(self.leases[model].held):
                    self.active.remove(model)
                    continue
                await asyncio.to_thread(measure_lag, settings, model)
            self.last_lag = now
        if now - self.last_purge > PURGE_INTERVAL:
            for model in self.active:
                await asyncio.to_thread(purge_published, settings, model)
            self.last_purge = now
        if not more:
            # Only a full batch means more is waiting. Going round again at once after a
            # partial one made a steady trickle of single results cost a query, a send, a
            # wait for the acks and a write per handful of rows (docs/performance.md);
            # waiting for the next poll lets rows gather.
            await self.sleep(settings.relay_poll_interval)

    async def broker_lost(self, state: RetryCallState) -> None:
        """After a round failed on the broker: start over with a new producer, and have
        what the failed round sent looked for on the broker (`reconcile`)."""
        PUBLISH_ERRORS.inc()
        # One line per outage step, not one per retry (the backoff doubles up to the max).
        if state.attempt_number == 1 or _base_backoff(state) >= MAX_BACKOFF:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("relay: broker unavailable (%r); retrying with backoff "
                        "(%d failures in a row)", exc, state.attempt_number)
        await self.close_producer()
        await self.watch.close()
        self.unreconciled.update(self.active)

    async def close_producer(self) -> None:
        if self.producer is not None:
            producer, self.producer = self.producer, None
            await _close_quietly(producer)

    async def close(self) -> None:
        await self.close_producer()
        await self.watch.close()
        for lease in self.leases.values():
            lease.release()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def _close_quietly(producer: Any) -> None:
    try:
        await producer.stop()
    except Exception as exc:
        log.debug("producer close failed: %r", exc)
