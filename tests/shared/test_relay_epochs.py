"""The relay when the broker loses its data (the embedded Tansu restarted empty): the rows
it had published are published again, in order per key, from the database (shared.relay);
published rows past the retention are deleted."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import timedelta

from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select, update

from services.ingest.models import OutboxMessage
from shared.broker import start_tansu
from shared.db import session_scope, utcnow
from shared.kafka import wait_for_broker
from shared.relay import marker_topic, purge_published, run_relay
from shared.settings import Settings
from shared.topics import DRUGCHECK_RESULTS
from tests.conftest import free_port
from tests.ingest.test_relay import _consume, _submit, _unpublished


async def _wait_published(settings: Settings, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while await asyncio.to_thread(_unpublished, settings):
        assert time.monotonic() < deadline, "rows left unpublished"
        await asyncio.sleep(0.1)


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return len((await admin.describe_topics([topic]))[0]["partitions"])
    finally:
        await admin.close()


def test_rows_the_broker_lost_are_published_again_in_order(settings: Settings) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    relay_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap,
                                                 "kafka_idempotent_producer": False})
    first = _submit(relay_settings, 30)

    async def scenario() -> list[tuple[str, dict]]:
        broker = start_tansu("127.0.0.1", port)
        stop = asyncio.Event()
        relay = None
        try:
            await wait_for_broker(bootstrap, 30)
            relay = asyncio.create_task(run_relay(relay_settings, [OutboxMessage], stop))
            await _wait_published(relay_settings)
            assert len(await _consume(bootstrap, 30)) == 30
            # The broker restarts empty, as the embedded one does; the relay is left running.
            broker.terminate()
            broker.wait(10)
            broker = start_tansu("127.0.0.1", port)
            await wait_for_broker(bootstrap, 30)
            second = await asyncio.to_thread(_submit_more, relay_settings)
            await _wait_published(relay_settings)
            got = await _consume(bootstrap, 60, within=60)
            assert await _partitions(bootstrap, DRUGCHECK_RESULTS.name) == \
                DRUGCHECK_RESULTS.partitions
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                assert marker_topic(OutboxMessage) in await admin.list_topics()
            finally:
                await admin.close()
            assert not relay.done()
            return [*got, *[("sent", {"event_id": e}) for e in second]]
        finally:
            stop.set()
            if relay is not None:
                await asyncio.wait_for(relay, 20)
            broker.terminate()
            broker.wait(10)

    out = asyncio.run(scenario())
    got = [(k, e) for k, e in out if k != "sent"]
    second = [e["event_id"] for k, e in out if k == "sent"]
    event_ids = [event["event_id"] for _key, event in got]
    assert sorted(event_ids) == sorted(first + second)  # all of them, each once
    per_key: dict[str, list[int]] = defaultdict(list)
    for key, event in got:
        per_key[key].append(int(event["sample_id"].split("-")[-1]))
    for samples in per_key.values():  # the first ones, then the new ones, in order
        assert samples == sorted(samples)


def _submit_more(settings: Settings) -> list[str]:
    """30 more results (sample ids after the first 30), from a second site."""
    from services.ingest.schemas import DrugCheckIn
    from services.ingest.service.common import Caller
    from services.ingest.service.drug_checks import submit_drug_check
    from services.ingest.service.sites import create_site
    from testing.builders import drug_check
    from tests.ingest.test_relay import ZIPS

    with session_scope(settings.sqlalchemy_url) as session:
        site, _ = create_site(session, "relay test 2", ["results"])
        caller = Caller(site.id, ("results",))
        ids = []
        for i in range(30, 60):
            body = DrugCheckIn.model_validate(
                drug_check(f"r-{i}", location={"postal_code": ZIPS[i % len(ZIPS)]}))
            row, _created = submit_drug_check(session, caller, body)
            ids.append(str(row.event_id))
        return ids


def test_published_rows_past_the_retention_are_deleted(settings: Settings) -> None:
    _submit(settings, 10)
    old, recent = utcnow() - timedelta(hours=settings.relay_retention_hours + 1), utcnow()
    with session_scope(settings.sqlalchemy_url) as session:  # row 1: the site's key, just sent
        session.execute(update(OutboxMessage).where(OutboxMessage.id.between(2, 5))
                        .values(published_at=old))
        session.execute(update(OutboxMessage).where(OutboxMessage.id.between(6, 8))
                        .values(published_at=recent))
    assert purge_published(settings, OutboxMessage) == 4
    with session_scope(settings.sqlalchemy_url) as session:
        left = session.scalar(select(func.count()).select_from(OutboxMessage))
    assert left == 7  # the site's key, the 3 recent and the 3 unpublished stay
    assert _unpublished(settings) == 3
