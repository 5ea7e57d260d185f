"""A whole referral over SMS on real parts: the alerts API's signed Twilio inbound webhook,
the alerts worker texting through the real twilio SDK to the fake Twilio server, the relay,
the referrals worker and API as real processes on a Tansu broker, SQLite, and a provider
webhook on a local HTTP server.

TREATMENT -> "reply with your ZIP" -> 98104 -> numbered options -> 1 -> the provider's
webhook gets a notice with only the consented fields -> the person gets address, hours and
phone -> the follow-up after the (shortened) delay -> 1 -> connected; then TREATMENT again
and STOP: the new conversation ends as stopped (alerts' contacts.stops.v1). Every status
change is read back from `referrals.events.v1`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from twilio.request_validator import RequestValidator

from shared.gsm import segment_count
from shared.topics import REFERRAL_EVENTS, REFERRAL_REQUESTS, SMS_INBOUND
from testing.twilio_server import FakeTwilioServer
from tests.conftest import crashed, free_port, lookout_processes, process_logs, run_lookout
from tests.referrals.helpers import (
    healthy,
    wait_for,
)
from tests.referrals.test_hsds import CSV_PACKAGE, JSON_SERVICES
from tests.referrals.webhook_server import WebhookServer

pytestmark = pytest.mark.e2e
SID = "AC" + "3" * 32
TOKEN = "referrals-e2e-token"
PHONE = "+12065550188"  # fictional
PROCESSES = ["alerts", "alerts-worker", "relay", "referrals", "referrals-worker"]
ADMIN = {"Authorization": "Bearer dev-admin-token"}
ALWAYS_OPEN = ("id,service_id,freq,byday,opens_at,closes_at,description\n"
               "sch-harbor-bup,svc-harbor-bup,WEEKLY,,00:00,23:59,24 hours (for this test)\n")


async def _referral_events(bootstrap: str, count: int, within: float,
                           group: str = "referrals-e2e-check") -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(REFERRAL_EVENTS.name, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=group)
    await consumer.start()
    events: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(within):
            async for message in consumer:
                events.append(json.loads(message.value or b"{}"))
                if len(events) >= count:
                    break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return events


async def _dead_letters(bootstrap: str, within: float) -> set[str]:
    """Garbage on the worker's two topics must reach their dead-letter topics."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for topic in (REFERRAL_REQUESTS, SMS_INBOUND):
        await producer.send_and_wait(topic.name, b"{not json", key=b"garbage")
    await producer.stop()
    consumer = AIOKafkaConsumer(REFERRAL_REQUESTS.dlq, SMS_INBOUND.dlq,
                                bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id="referrals-e2e-dlq")
    await consumer.start()
    seen: set[str] = set()
    try:
        async with asyncio.timeout(within):
            async for message in consumer:
                if message.value == b"{not json":
                    seen.add(message.topic)
                if len(seen) == 2:
                    break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return seen


def test_a_referral_over_sms_from_treatment_to_connected(own_broker: str,
                                                         tmp_path: Path) -> None:
    alerts_port, referrals_port = free_port(), free_port()
    alerts_url = f"http://127.0.0.1:{alerts_port}"
    with FakeTwilioServer(account_sid=SID, auth_token=TOKEN) as twilio, \
            WebhookServer() as provider:
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "LOOKOUT_ENV": "test",
            "LOOKOUT_VAR_DIR": str(tmp_path / "var"),
            "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'referrals-e2e.db'}",
            "LOOKOUT_KAFKA_BOOTSTRAP": own_broker,
            "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
            "LOOKOUT_ALERTS_PORT": str(alerts_port),
            "LOOKOUT_REFERRALS_PORT": str(referrals_port),
            "LOOKOUT_RELAY_METRICS_PORT": str(free_port()),
            "LOOKOUT_ALERTS_WORKER_METRICS_PORT": str(free_port()),
            "LOOKOUT_REFERRALS_WORKER_METRICS_PORT": str(free_port()),
            "LOOKOUT_SMS_BACKEND": "twilio", "LOOKOUT_SMS_RATE_PER_SECOND": "0",
            "LOOKOUT_TWILIO_ACCOUNT_SID": SID, "LOOKOUT_TWILIO_AUTH_TOKEN": TOKEN,
            "LOOKOUT_TWILIO_API_BASE_URL": twilio.url, "LOOKOUT_PUBLIC_ALERTS_URL": alerts_url,
            # Simulated time, the real-process way: a short follow-up delay, a quick tick.
            "LOOKOUT_REFERRALS_FOLLOWUP_DELAY_SECONDS": "3",
            "LOOKOUT_REFERRALS_TICK_SECONDS": "0.5",
            "LOOKOUT_REFERRALS_WEBHOOK_ALLOW_PRIVATE": "true",  # the local provider server
        }
        run_lookout(env, "db", "upgrade")
        assert "rejected: 13" in run_lookout(env, "providers", "import", str(CSV_PACKAGE))
        run_lookout(env, "providers", "import", str(JSON_SERVICES))
        # The sample clinic keeps office hours; make it open whenever this test runs.
        patch = tmp_path / "schedule.csv"
        patch.write_text(ALWAYS_OPEN)
        assert "imported: 1 schedule" in run_lookout(env, "providers", "import", str(patch))


        def sms(body: str) -> str:
            params = {"From": PHONE, "To": "+15005550006", "Body": body,
                      "MessageSid": "SM" + str(time.monotonic_ns())[-32:].rjust(32, "0"),
                      "AccountSid": SID, "NumMedia": "0"}
            signature = RequestValidator(TOKEN).compute_signature(
                f"{alerts_url}/v1/sms/inbound", params)
            response = httpx.post(f"{alerts_url}/v1/sms/inbound", data=params,
                                  headers={"X-Twilio-Signature": signature}, timeout=10)
            assert response.status_code == 200, response.text
            return response.text

        def texted(fragment: str) -> Callable[[], str | None]:
            def check() -> str | None:
                for message in twilio.messages(to=PHONE):
                    if fragment in message["body"]:
                        return str(message["body"])
                return None
            return check

        with lookout_processes(PROCESSES, env, tmp_path) as procs:
            wait_for("the APIs", lambda: all(
                healthy(f"http://127.0.0.1:{p}/healthz") for p in (alerts_port,
                                                                     referrals_port)), 60)
            hook = httpx.patch(f"http://127.0.0.1:{referrals_port}/v1/providers/services/"
                               "svc-harbor-bup", headers=ADMIN,
                               json={"notify_channel": "webhook", "notify_address": provider.url})
            assert hook.status_code == 200, hook.text

            assert asyncio.run(_dead_letters(own_broker, within=120)) == {
                REFERRAL_REQUESTS.dlq, SMS_INBOUND.dlq}
            sms("TREATMENT")
            wait_for("the ZIP question", texted("reply with your ZIP code"), 60)
            sms("98104")
            options = wait_for("the options", texted("1 Harbor Street Bupe Walk-in"), 30)
            assert segment_count(options) <= 2 and "Reply 1, 2" in options

            sms("1")
            wait_for("the provider notice", lambda: provider.received, 30)
            [notice] = [r["json"] for r in provider.received]
            assert set(notice) == {"referral_id", "service_id", "service_name",
                                   "status_link", "consent", "service_types", "language",
                                   "region"}
            assert notice["service_id"] == "svc-harbor-bup"
            assert notice["region"] == "98104 (Seattle, WA)"
            assert PHONE[2:] not in json.dumps(notice)
            details = wait_for("the details", texted("100 Example Ave, Seattle"), 30)
            assert "206-555-0101" in details and "open 24 hours" in details

            wait_for("the follow-up", texted("did you connect?"), 30)
            sms("1")
            wait_for("the thanks", texted("glad you connected"), 30)

            events = asyncio.run(_referral_events(own_broker, 5, within=30))
            assert [e["status"] for e in events] == [
                "requested", "options_sent", "chosen", "provider_notified", "connected"]
            assert {e["referral_id"] for e in events} == {notice["referral_id"]}
            link = notice["status_link"].replace(
                f"http://127.0.0.1:{referrals_port}", "")
            page = httpx.get(f"http://127.0.0.1:{referrals_port}{link}", timeout=10)
            assert page.status_code == 200 and "connected" in page.text

            # STOP during an open conversation: alerts stops the number and announces it
            # (contacts.stops.v1), and referrals ends the conversation as stopped.
            asked = len(twilio.messages(to=PHONE))
            sms("TREATMENT")
            wait_for("the ZIP question again", lambda: len(twilio.messages(to=PHONE)) > asked
                     or None, 60)
            assert "unsubscribed" in sms("STOP")
            texted_before_stop = len(twilio.messages(to=PHONE))
            events = asyncio.run(_referral_events(own_broker, 7, within=60,
                                                  group="referrals-e2e-stop"))
            assert [e["status"] for e in events
                    if e["referral_id"] != notice["referral_id"]] == ["requested", "stopped"]
            assert len(twilio.messages(to=PHONE)) == texted_before_stop  # nothing after STOP

            assert not crashed(procs), f"processes died: {crashed(procs)}"
        everything = process_logs(PROCESSES, tmp_path)
        assert PHONE not in everything and PHONE[2:] not in everything
        assert "Traceback" not in everything, everything[-3000:]

