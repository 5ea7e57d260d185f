"""Real processes for the alerts tests and benchmarks: a Tansu broker, SQLite (or
PostgreSQL), the alerts worker(s) and API started with `lookout`, many subscribers seeded
fast, a signal published; the process tests' fixtures (a fake Twilio server for SID and
TOKEN, a broker)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import insert

from migrations import upgrade
from services.alerts.models import Subscriber, Subscription
from services.stack import command
from shared.broker import free_port, running_tansu
from shared.crypto import encrypt_phone, phone_lookup_hash
from shared.db import get_engine
from shared.settings import REPO_ROOT, Settings
from shared.topics import SIGNALS
from testing.builders import contamination_signal
from testing.twilio_server import FakeTwilioServer

SID = "AC" + "4" * 32
TOKEN = "procs-auth-token"
REGION = "us/wa/king-county/98104"
SECRET = Settings().secret_key  # the processes run with the default test secret


def phone_of(i: int) -> str:
    """Distinct valid-looking NANP numbers: +1 206 2xx xxxx."""
    return f"+1206{2000000 + i:07d}"


tansu = running_tansu  # a fresh broker on a free port, topics created


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioServer]:
    """The fake Twilio server the stack's processes send to (account SID, auth TOKEN)."""
    with FakeTwilioServer(account_sid=SID, auth_token=TOKEN) as server:
        yield server


@pytest.fixture
def bootstrap() -> Iterator[str]:
    """A fresh broker's bootstrap address."""
    with tansu() as address:
        yield address


def seed_subscribers(url: str, secret_key: str, count: int, region: str = REGION,
                     language: str = "en") -> None:
    """`count` active subscribers of `region`, inserted in bulk."""
    engine = get_engine(url)
    now = datetime.now(UTC)
    batch = 5000
    for start in range(0, count, batch):
        subs, links = [], []
        for i in range(start, min(start + batch, count)):
            phone = phone_of(i)
            sid = uuid.uuid4()
            subs.append({"id": sid, "phone_encrypted": encrypt_phone(secret_key, phone),
                         "phone_hash": phone_lookup_hash(secret_key, phone),
                         "language": language, "status": "active", "consent_at": now,
                         "consent_channel": "test", "created_at": now, "code_attempts": 0})
            links.append({"subscriber_id": sid, "region_id": region})
        with engine.begin() as conn:
            conn.execute(insert(Subscriber), subs)
            conn.execute(insert(Subscription), links)


async def publish_signal(bootstrap: str, region: str = REGION) -> uuid.UUID:
    signal = contamination_signal(region)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(SIGNALS.name, signal.model_dump_json().encode(),
                                     key=region.encode())
    finally:
        await producer.stop()
    return signal.event_id


@dataclass
class Stack:
    """Env and processes of one alerts stack (worker, optionally the API)."""

    tmp: Path
    bootstrap: str
    twilio_url: str
    rate: float = 0
    database_url: str | None = None  # default: a SQLite file in `tmp`
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)
    alerts_port: int = field(default_factory=free_port)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.tmp / 'alerts.db'}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOOKOUT_ENV": "test",
            "LOOKOUT_VAR_DIR": str(self.tmp / "var"),
            "LOOKOUT_DATABASE_URL": self.db_url,
            "LOOKOUT_KAFKA_BOOTSTRAP": self.bootstrap,
            "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
            "LOOKOUT_ALERTS_PORT": str(self.alerts_port),
            "LOOKOUT_ALERTS_WORKER_METRICS_PORT": str(free_port()),
            "LOOKOUT_SMS_BACKEND": "twilio",
            "LOOKOUT_TWILIO_ACCOUNT_SID": SID,
            "LOOKOUT_TWILIO_AUTH_TOKEN": TOKEN,
            "LOOKOUT_TWILIO_API_BASE_URL": self.twilio_url,
            "LOOKOUT_PUBLIC_ALERTS_URL": f"http://127.0.0.1:{self.alerts_port}",
            "LOOKOUT_SMS_RATE_PER_SECOND": str(self.rate),
            "LOOKOUT_SMS_STALE_SENDING_SECONDS": "2",
            **self.extra_env,
        }

    def migrate(self, migrated_sqlite: Callable[[Path], str] | None = None) -> None:
        """Migrate the stack's database; the tests pass their session's migrated copy."""
        if migrated_sqlite is None:
            upgrade(self.db_url)
        else:
            migrated_sqlite(self.tmp / "alerts.db")

    def start(self, name: str, label: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        label = label or name
        log = self.logs.get(label) or (self.tmp / f"{label}.log").open("ab")
        self.logs[label] = log
        proc = subprocess.Popen(command(name), env={**self.env, **env}, cwd=REPO_ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs[label] = proc
        return proc

    def wait_api(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.alerts_port}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("alerts API did not start")

    def log_text(self) -> str:
        for log in self.logs.values():
            log.flush()
        return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace")
                         for name in self.logs)

    def wait_metrics(self, port: int, within: float = 90) -> None:
        """Until a worker started with this metrics port answers on it."""
        if not wait_until(lambda: _answers(f"http://127.0.0.1:{port}/metrics"), within):
            raise TimeoutError(f"no worker answered on metrics port {port}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self.logs.values():
            log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(predicate: Any, within: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
