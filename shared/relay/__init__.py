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
    stop = stop or asyncio.Event()
    backoff = 0.2
    producer = None
    leases = {m: TableLease(settings, m.__tablename__) for m in models}
    active: list[Any] = []
    unreconciled: set[Any] = set()
    watch = BrokerWatch(settings, active)
    last_lease = last_lag = last_purge = 0.0
    failures = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if len(active) < len(models) and (
                    not active or now - last_lease > settings.relay_standby_poll_seconds):
                for model in models:
                    if model not in active and await asyncio.to_thread(leases[model].acquire):
                        log.info("relay: active for %s", model.__tablename__)
                        active.append(model)
                        unreconciled.add(model)
                last_lease = now
            if not active:
                await _sleep_or_stop(stop, settings.relay_standby_poll_seconds)
                continue
            try:
                if producer is None:
                    await watch.check()
                    producer = make_producer(settings)
                    await producer.start()
                    log.info("relay connected to %s", settings.bootstrap_servers)
                for model in list(unreconciled):
                    await reconcile(settings, model)
                    unreconciled.discard(model)
                more = False
                for model in active:
                    published = await publish_pending(settings, producer, model, watch.check)
                    more = more or published >= settings.relay_batch_size
                backoff, failures = 0.2, 0
                now = time.monotonic()
                if now - watch.checked_at > BROKER_CHECK_INTERVAL:
                    await watch.check()
                if now - last_lag > 1:
                    for model in list(active):
                        if not await asyncio.to_thread(leases[model].held):
                            active.remove(model)
                            continue
                        await asyncio.to_thread(measure_lag, settings, model)
                    last_lag = now
                if now - last_purge > PURGE_INTERVAL:
                    for model in active:
                        await asyncio.to_thread(purge_published, settings, model)
                    last_purge = now
                if not more:
                    # Only a full batch means more is waiting. Going round again at once
                    # after a partial one made a steady trickle of single results cost a
                    # query, a send, a wait for the acks and a write per handful of rows
                    # (docs/performance.md); waiting for the next poll lets rows gather.
                    await _sleep_or_stop(stop, settings.relay_poll_interval)
            except (KafkaError, OSError) as exc:
                PUBLISH_ERRORS.inc()
                failures += 1
                # One line per outage step, not one per retry: retries double up to 10 s.
                if failures == 1 or backoff >= 10.0:
                    log.warning("relay: broker unavailable (%r); retrying with backoff "
                                "(%d failures in a row)", exc, failures)
                if producer is not None:
                    await _close_quietly(producer)
                    producer = None
                await watch.close()
                unreconciled.update(active)  # what the failed round sent may be there
                await _sleep_or_stop(stop, backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, 10.0)
    finally:
        if producer is not None:
            await _close_quietly(producer)
        await watch.close()
        for lease in leases.values():
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
