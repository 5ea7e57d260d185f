"""The alerts worker as a real process against Tansu, SQLite and the fake Twilio server
(real twilio SDK): kill -9 in the middle of a fan-out, STOP during a 10,000-subscriber
fan-out, and no phone number in any process's logs."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator

from shared.settings import Settings
from testing.alerts_stack import (
    SECRET,
    TOKEN,
    Stack,
    phone_of,
    publish_signal,
    seed_subscribers,
    wait_until,
)
from testing.twilio_server import FakeTwilioServer
from tests.conftest import MigratedSqlite


def _counts(server: FakeTwilioServer) -> Counter[str]:
    return Counter(m["to"] for m in server.messages())


def _assert_no_phone_in_logs(stack: Stack, phones: list[str]) -> None:
    logs = stack.log_text()
    assert logs.strip(), "the processes wrote no logs at all"
    for phone in phones:
        assert phone not in logs and phone[2:] not in logs, "a phone number reached the logs"


def test_kill_9_mid_fan_out_then_restart_sends_each_exactly_once(
    tmp_path: Path, bootstrap: str, fake_twilio: FakeTwilioServer,
    migrated_sqlite: MigratedSqlite,
) -> None:
    count = 1500
    stack = Stack(tmp_path, bootstrap, fake_twilio.url, rate=250)
    stack.migrate(migrated_sqlite)
    seed_subscribers(stack.db_url, SECRET, count)
    worker = stack.start("alerts-worker")
    try:
        asyncio.run(publish_signal(bootstrap))
        assert wait_until(lambda: fake_twilio.message_count() >= 300, 90), \
            "the fan-out did not start"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        at_kill = len(fake_twilio.messages())
        assert at_kill < count, "the fan-out finished before the kill"
        stack.start("alerts-worker")
        assert wait_until(lambda: len(_counts(fake_twilio)) == count, 120), \
            f"only {len(_counts(fake_twilio))} of {count} subscribers got the alert"
        time.sleep(5)  # anything late (a reconcile, a redelivered job) would show now
        counts = _counts(fake_twilio)
        assert len(counts) == count
        doubles = {to: n for to, n in counts.items() if n != 1}
        assert not doubles, f"{len(doubles)} subscribers got more than one message"
        assert set(counts) == {phone_of(i) for i in range(count)}
        _assert_no_phone_in_logs(stack, [phone_of(i) for i in range(0, count, 97)])
    finally:
        stack.stop_all()


def _stop(stack: Stack, phone: str) -> str:
    url = f"http://127.0.0.1:{stack.alerts_port}/v1/sms/inbound"
    params = {"From": phone, "To": "+15005550006", "Body": "STOP",
              "MessageSid": "SM" + uuid.uuid4().hex}  # each its own (a seen sid is a replay)
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature},
                          timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def test_stop_during_a_10000_subscriber_fan_out(
    tmp_path: Path, bootstrap: str, fake_twilio: FakeTwilioServer,
    migrated_sqlite: MigratedSqlite,
) -> None:
    count = 10_000
    stack = Stack(tmp_path, bootstrap, fake_twilio.url, rate=1500)
    stack.migrate(migrated_sqlite)
    seed_subscribers(stack.db_url, SECRET, count)
    stack.start("alerts")
    stack.wait_api()
    # Without status callbacks: 20,000 of them would only load the API (and SQLite) here.
    stack.start("alerts-worker", LOOKOUT_PUBLIC_ALERTS_URL="")
    try:
        asyncio.run(publish_signal(bootstrap))
        assert wait_until(lambda: fake_twilio.message_count() >= 1000, 120), \
            "the fan-out did not start"
        texted = _counts(fake_twilio)
        stoppers = [phone_of(i) for i in range(count) if phone_of(i) not in texted][::40][:60]
        seen_at_stop: dict[str, int] = {}
        for phone in stoppers:
            assert "unsubscribed" in _stop(stack, phone)
            seen_at_stop[phone] = len(fake_twilio.messages(to=phone))
        sent_when_stopped = len(fake_twilio.messages())
        assert sent_when_stopped < count - len(stoppers), "the fan-out ended before STOPs"
        expected = count - sum(1 for n in seen_at_stop.values() if n == 0)
        assert wait_until(lambda: fake_twilio.message_count() >= expected, 240), \
            f"fan-out stalled at {len(fake_twilio.messages())} of {expected}"
        time.sleep(3)
        counts = _counts(fake_twilio)
        for phone, before in seen_at_stop.items():
            assert counts.get(phone, 0) == before, "a message was sent after STOP"
        never = [p for p, n in seen_at_stop.items() if n == 0]
        assert len(never) >= len(stoppers) // 2, "most STOPs came too late to test anything"
        assert len(fake_twilio.messages()) == expected
        assert max(counts.values()) == 1
        _assert_no_phone_in_logs(stack, stoppers + [phone_of(i) for i in range(0, count, 501)])
    finally:
        stack.stop_all()


def test_a_draft_approved_by_an_official_is_sent_by_the_running_worker(
    tmp_path: Path, bootstrap: str, fake_twilio: FakeTwilioServer,
    migrated_sqlite: MigratedSqlite,
) -> None:
    from testing.alerts_stack import REGION
    from testing.builders import contamination_signal
    from tests.credentials import official_headers

    stack = Stack(tmp_path, bootstrap, fake_twilio.url, rate=0)
    stack.migrate(migrated_sqlite)
    seed_subscribers(stack.db_url, SECRET, 20)
    stack.start("alerts")
    stack.wait_api()
    stack.start("alerts-worker", LOOKOUT_PUBLIC_ALERTS_URL="")
    api = f"http://127.0.0.1:{stack.alerts_port}"
    admin = {"Authorization": f"Bearer {Settings().admin_token}"}
    try:
        signal_ = contamination_signal(REGION, severity="warning")  # not auto-approved

        async def publish() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            await producer.send_and_wait("signals.v1", signal_.model_dump_json().encode(),
                                         key=REGION.encode())
            await producer.stop()

        asyncio.run(publish())
        drafts: list[dict[str, object]] = []

        def draft_arrived() -> bool:
            drafts[:] = httpx.get(f"{api}/v1/alerts?status=draft", headers=admin).json()
            return bool(drafts)

        assert wait_until(draft_arrived, 90), "no draft alert"
        time.sleep(2)
        assert fake_twilio.messages() == []  # a draft sends nothing
        approved = httpx.post(f"{api}/v1/alerts/{drafts[0]['id']}/approve",
                              headers=official_headers(Settings(env="test")))
        assert approved.status_code == 200, approved.text
        assert wait_until(lambda: fake_twilio.message_count() == 20, 60)
        time.sleep(2)
        assert len(fake_twilio.messages()) == 20
        detail = httpx.get(f"{api}/v1/alerts/{drafts[0]['id']}", headers=admin).json()
        assert detail["deliveries"] == {"queued": 20}
        assert detail["status"] in ("sending", "sent")
    finally:
        stack.stop_all()
