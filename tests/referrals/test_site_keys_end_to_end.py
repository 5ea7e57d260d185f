"""Site keys on real parts: the ingest admin API issues a key with the `referrals` scope, the
relay publishes ingest's outbox to `sites.keys.v1` on a Tansu broker, the referrals worker
keeps its replica, and the referrals API accepts the key; garbage on the topic goes to its
dead-letter topic and the worker goes on, so the revocation after it is honoured."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.topics import SITE_KEYS
from tests.conftest import crashed, free_port, lookout_processes, process_logs, run_lookout
from tests.referrals.helpers import (
    healthy,
    wait_for,
)
from tests.referrals.test_hsds import CSV_PACKAGE

pytestmark = pytest.mark.e2e
PROCESSES = ["ingest", "relay", "referrals", "referrals-worker"]
ADMIN = {"Authorization": "Bearer dev-admin-token"}
BODY = {"service_types": ["buprenorphine"], "postal_code": "98104",
        "consent": {"shared_fields": ["service_type"], "wording": "Read to the person."}}


async def _garbage_is_dead_lettered(bootstrap: str, within: float) -> bool:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await producer.send_and_wait(SITE_KEYS.name, b'{"key_id": "not a uuid"}', key=b"garbage")
    await producer.stop()
    consumer = AIOKafkaConsumer(SITE_KEYS.dlq, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id="site-keys-dlq-check")
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            async for message in consumer:
                if message.key == b"garbage":
                    return True
    except TimeoutError:
        return False
    finally:
        await consumer.stop()
    return False


def test_a_site_key_issued_by_ingest_refers_and_its_revocation_reaches_referrals(
        own_broker: str, tmp_path: Path) -> None:
    ingest_port, referrals_port = free_port(), free_port()
    ingest_url = f"http://127.0.0.1:{ingest_port}"
    referrals_url = f"http://127.0.0.1:{referrals_port}"
    env = {
        **os.environ, "PYTHONUNBUFFERED": "1", "LOOKOUT_ENV": "test",
        "LOOKOUT_VAR_DIR": str(tmp_path / "var"),
        "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'site-keys-e2e.db'}",
        "LOOKOUT_KAFKA_BOOTSTRAP": own_broker, "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "LOOKOUT_INGEST_PORT": str(ingest_port), "LOOKOUT_REFERRALS_PORT": str(referrals_port),
        "LOOKOUT_RELAY_METRICS_PORT": str(free_port()),
        "LOOKOUT_REFERRALS_WORKER_METRICS_PORT": str(free_port()),
    }
    run_lookout(env, "db", "upgrade")
    run_lookout(env, "providers", "import", str(CSV_PACKAGE))

    def refer(key: str) -> httpx.Response:
        return httpx.post(f"{referrals_url}/v1/referrals", json=BODY, timeout=10,
                          headers={"Authorization": f"Bearer {key}"})

    with lookout_processes(PROCESSES, env, tmp_path) as procs:
        wait_for("the APIs", lambda: healthy(f"{ingest_url}/healthz")
                 and healthy(f"{referrals_url}/healthz"), 60)
        created = httpx.post(f"{ingest_url}/v1/admin/sites", headers=ADMIN, timeout=10,
                             json={"name": "Harbor Outreach", "scopes": ["referrals"]})
        assert created.status_code == 201, created.text
        site = created.json()
        accepted = wait_for("the key to reach referrals",
                            lambda: (r := refer(site["api_key"])).status_code == 201 and r, 60)
        assert accepted.json()["site_id"] == site["site_id"]

        assert asyncio.run(_garbage_is_dead_lettered(own_broker, within=60))
        [key] = httpx.get(f"{ingest_url}/v1/admin/sites/{site['site_id']}/keys",
                          headers=ADMIN, timeout=10).json()
        revoked = httpx.post(f"{ingest_url}/v1/admin/sites/{site['site_id']}/keys/"
                             f"{key['id']}/revoke", headers=ADMIN, timeout=10)
        assert revoked.status_code == 200, revoked.text
        refused = wait_for("the revocation to reach referrals",
                           lambda: (r := refer(site["api_key"])).status_code == 401 and r, 30)
        assert refused.headers["content-type"] == "application/problem+json"

        assert not crashed(procs), f"processes died: {crashed(procs)}"
    everything = process_logs(PROCESSES, tmp_path)
    assert site["api_key"] not in everything
    assert "Traceback" not in everything, everything[-3000:]
