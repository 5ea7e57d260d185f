"""End to end on real parts: the real processes, a Tansu broker on a free port, SQLite, and
the real twilio SDK talking to the fake Twilio server.

A drug-checking site POSTs a sample sold as cocaine in which FTIR found fentanyl; exactly one
SMS must reach the fake Twilio server within 15 s, naming the substance and the region.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.demo import DEMO_PHONE
from services.smoke import demo_result
from shared.topics import DRUGCHECK_RESULTS, SIGNALS, SMS_OUTBOUND
from testing.twilio_server import FakeTwilioServer
from tests.conftest import free_port, lookout_processes, run_lookout

pytestmark = pytest.mark.e2e
SID = "AC" + "2" * 32
TOKEN = "e2e-auth-token"
SERVICES = ["ingest", "relay", "detection", "alerts", "alerts-worker"]


async def _dead_letters_arrive(bootstrap: str, within: float) -> set[str]:
    """Send one malformed message to each consumed topic; return the topics whose DLQ got it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    topics = [DRUGCHECK_RESULTS, SIGNALS, SMS_OUTBOUND]
    for topic in topics:
        await producer.send_and_wait(topic.name, b"{not json", key=b"garbage")
    await producer.stop()
    consumer = AIOKafkaConsumer(*[t.dlq for t in topics], bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id="e2e-dlq-check")
    await consumer.start()
    seen: set[str] = set()
    try:
        async with asyncio.timeout(within):
            async for message in consumer:
                if message.value == b"{not json":
                    seen.add(message.topic)
                if len(seen) == len(topics):
                    break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return seen


def test_a_fentanyl_in_cocaine_result_texts_the_subscriber_once(
    own_broker: str, tmp_path: Path
) -> None:
    ingest_port, alerts_port = free_port(), free_port()
    with FakeTwilioServer(account_sid=SID, auth_token=TOKEN) as twilio:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOOKOUT_ENV": "test",
            "LOOKOUT_VAR_DIR": str(tmp_path / "var"),
            "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.db'}",
            "LOOKOUT_KAFKA_BOOTSTRAP": own_broker,
            "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
            "LOOKOUT_INGEST_PORT": str(ingest_port),
            "LOOKOUT_ALERTS_PORT": str(alerts_port),
            "LOOKOUT_RELAY_METRICS_PORT": str(free_port()),
            "LOOKOUT_DETECTION_METRICS_PORT": str(free_port()),
            "LOOKOUT_ALERTS_WORKER_METRICS_PORT": str(free_port()),
            "LOOKOUT_SMS_BACKEND": "twilio",
            "LOOKOUT_TWILIO_ACCOUNT_SID": SID,
            "LOOKOUT_TWILIO_AUTH_TOKEN": TOKEN,
            "LOOKOUT_TWILIO_API_BASE_URL": twilio.url,
            "LOOKOUT_PUBLIC_ALERTS_URL": f"http://127.0.0.1:{alerts_port}",
        }
        run_lookout(env, "db", "upgrade")
        api_key = run_lookout(env, "seed").strip().splitlines()[-1].split()[-1]
        try:
            with lookout_processes(SERVICES, env, tmp_path) as procs:
                _wait_healthy([f"http://127.0.0.1:{p}/healthz" for p in (ingest_port, alerts_port)])
                # The agents must survive malformed messages (and this shows they are consuming).
                dead = asyncio.run(_dead_letters_arrive(own_broker, within=120))
                assert dead == {DRUGCHECK_RESULTS.dlq, SIGNALS.dlq, SMS_OUTBOUND.dlq}

                started = time.monotonic()
                response = httpx.post(f"http://127.0.0.1:{ingest_port}/v1/drug-checks",
                                      json=demo_result("e2e-1"),
                                      headers={"Authorization": f"Bearer {api_key}"},
                                      timeout=30)
                assert response.status_code == 202, response.text
                while not twilio.messages() and time.monotonic() - started < 15:
                    time.sleep(0.05)
                latency = time.monotonic() - started
                messages = twilio.messages()
                assert len(messages) == 1, f"no SMS within 15 s ({latency:.1f}s)"
                assert messages[0]["to"] == DEMO_PHONE
                assert "Fentanyl" in messages[0]["body"]
                assert "98104" in messages[0]["body"]

                # The signed status callbacks reach the alerts API and move the delivery on.
                admin = {"Authorization": "Bearer dev-admin-token"}
                deadline = time.monotonic() + 10
                status = ""
                while status != "delivered" and time.monotonic() < deadline:
                    rows = httpx.get(f"http://127.0.0.1:{alerts_port}/v1/deliveries",
                                     headers=admin).json()
                    status = rows[0]["status"] if rows else ""
                    time.sleep(0.1)
                assert status == "delivered"

                time.sleep(2)
                assert len(twilio.messages()) == 1, "a second SMS was sent for one result"

                # `lookout smoke` works every time: its canary raises its own TEST alert for the
                # demo (test) subscriber, while real detection state is left alone.
                for run in (1, 2):
                    smoke = run_lookout(env, "smoke", "--timeout", "30")
                    assert "handed to the twilio backend" in smoke and "[TEST]" in smoke, smoke
                    assert len(twilio.messages()) == 1 + run
                crashed = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
                assert not crashed, f"processes died: {crashed}"
        finally:
            for name in SERVICES:  # shown by pytest when the test fails
                tail = (tmp_path / f"{name}.log").read_text()[-3000:]
                print(f"----- {name} log (tail) -----\n{tail}")
        everything = "".join((tmp_path / f"{n}.log").read_text() for n in SERVICES)
        assert DEMO_PHONE not in everything and DEMO_PHONE[2:] not in everything
        assert "Traceback" not in everything


def _wait_healthy(urls: list[str], within: float = 180) -> None:
    """Five processes import and start at once: on a loaded 2-core machine a minute was not
    always enough."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if all(httpx.get(u, timeout=1).status_code == 200 for u in urls):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"services not healthy within {within}s: {urls}")
