"""Broker outage through the API: stop the broker, submit 1,000 results through the HTTP API
(all accepted), start the broker, and find the 1,000 on the topic exactly once, in order per
key. The relay runs the whole time, in its own thread, against the real Tansu."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict

from fastapi.testclient import TestClient

from services.ingest.models import OutboxMessage
from shared.broker import start_tansu
from shared.kafka import ensure_topics, wait_for_broker
from shared.outbox import PUBLISH_ERRORS
from shared.relay import run_relay
from shared.settings import Settings
from testing.builders import drug_check
from tests.conftest import free_port
from tests.ingest.conftest import MakeSite
from tests.ingest.test_relay import ZIPS, _consume, _unpublished


class RelayThread:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(run_relay(self.settings, [OutboxMessage], self.stop_event))

    def __enter__(self) -> RelayThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)
        assert not self.thread.is_alive()


def _wait_until_published(settings: Settings, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while _unpublished(settings) and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_thousand_accepted_during_an_outage_reach_the_topic_exactly_once(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    settings = ingest_settings.model_copy(update={"kafka_bootstrap": bootstrap,
                                                  "kafka_idempotent_producer": False})
    auth = make_site("outage", ["results"])
    broker = start_tansu("127.0.0.1", port)
    try:
        asyncio.run(wait_for_broker(bootstrap, 30))
        asyncio.run(ensure_topics(bootstrap))
        errors_before = PUBLISH_ERRORS._value.get()
        with RelayThread(settings) as relay:
            # the broker goes away with the relay connected
            broker.terminate()
            broker.wait(10)
            sent = []
            for i in range(1000):
                body = drug_check(f"o-{i:04d}", location={"postal_code": ZIPS[i % 3]})
                response = ingest_client.post("/v1/drug-checks", json=body, headers=auth)
                assert response.status_code == 202, response.text
                sent.append(response.json()["event_id"])
            time.sleep(1)
            assert _unpublished(settings) == 1000  # accepted, waiting, none dropped
            assert relay.thread.is_alive()
        # The relay retried and kept everything. It is restarted below only because a
        # restarted Tansu (memory storage) comes back empty and auto-creates a topic with
        # other partitions on the first produce, a race a real cluster does not have.
        assert PUBLISH_ERRORS._value.get() > errors_before
        broker = start_tansu("127.0.0.1", port)
        asyncio.run(wait_for_broker(bootstrap, 30))
        asyncio.run(ensure_topics(bootstrap))
        with RelayThread(settings):
            _wait_until_published(settings)
            got = asyncio.run(_consume(bootstrap, 1000, within=120))
    finally:
        if broker.poll() is None:
            broker.terminate()
            broker.wait(10)
    assert _unpublished(settings) == 0
    event_ids = [event["event_id"] for _key, event in got]
    assert len(event_ids) == 1000
    assert sorted(event_ids) == sorted(sent)  # every one, exactly once
    per_key: dict[str, list[str]] = defaultdict(list)
    for key, event in got:
        assert key == event["region_id"]
        per_key[key].append(event["sample_id"])
    assert len(per_key) == 3
    for samples in per_key.values():
        assert samples == sorted(samples)
