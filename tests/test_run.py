"""`lookout run` (`make run`) when its processes die: a crashed process is started again with
backoff, the embedded broker restarting empty loses nothing accepted (the relay publishes
again from the database, detection rebuilds, alerts sends no SMS twice), and a SIGKILL of
`lookout run` ends every process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.smoke import demo_result
from tests.conftest import REPO_ROOT, free_port

PORTS = ("INGEST_PORT", "ALERTS_PORT", "REFERRALS_PORT", "DASHBOARD_PORT", "BROKER_PORT",
         "DETECTION_METRICS_PORT", "ALERTS_WORKER_METRICS_PORT", "RELAY_METRICS_PORT",
         "REFERRALS_WORKER_METRICS_PORT")
RESTART_BACKOFF = 6.0  # s: the broker stays away a while


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int]
    api_key: str

    def out(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        return [int(p) for p in re.findall(rf"\| {re.escape(name)} started \(pid=(\d+)\)",
                                           self.out())]

    def url(self, port: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def wait_for(self, text: str, within: float, after: int = 0) -> None:
        deadline = time.monotonic() + within
        while text not in self.out()[after:]:
            assert self.proc.poll() is None, self.out()[-4000:]
            assert time.monotonic() < deadline, (text, self.out()[-4000:])
            time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("run")
    ports = {name: free_port() for name in PORTS}
    env = {**os.environ, "LOOKOUT_ENV": "dev", "LOOKOUT_VAR_DIR": str(tmp),
           "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp / 'run.db'}",
           "LOOKOUT_SMS_RATE_PER_SECOND": "0",
           "LOOKOUT_RUN_RESTART_BACKOFF_SECONDS": str(RESTART_BACKOFF),
           **{f"LOOKOUT_{name}": str(port) for name, port in ports.items()}}
    log = tmp / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env,
                                cwd=REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    key = ""
    try:
        stack = Stack(proc, log, ports, key)
        stack.wait_for("All HTTP services are up", 240)
        found = re.search(r"demo API key\s+(\S+)", stack.out())
        assert found
        stack.api_key = found.group(1)
        time.sleep(10)  # the stream workers have joined their consumer groups
        yield stack
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by init) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_crashed_process_is_started_again_and_said_so(stack: Stack) -> None:
    [victim] = stack.pids("alerts-worker")
    mark = len(stack.out())
    os.kill(victim, signal.SIGKILL)
    stack.wait_for("alerts-worker exited (rc=-9)", 30, mark)
    assert "restarting in" in stack.out()[mark:]
    deadline = time.monotonic() + RESTART_BACKOFF + 30
    while len(stack.pids("alerts-worker")) < 2:
        assert time.monotonic() < deadline, stack.out()[-4000:]
        time.sleep(0.3)
    assert _alive(stack.pids("alerts-worker")[-1])
    for port in ("INGEST_PORT", "ALERTS_PORT", "REFERRALS_PORT"):  # the rest ran on
        assert httpx.get(stack.url(port) + "/healthz", timeout=5).status_code == 200
    for name in ("ingest", "relay", "detection"):
        assert len(stack.pids(name)) == 1, name


def _submit(stack: Stack, i: int) -> str:
    response = httpx.post(stack.url("INGEST_PORT") + "/v1/drug-checks",
                          json=demo_result(f"run-{i}", canary=True),
                          headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["event_id"])


def _handed(stack: Stack, event_id: str) -> int:
    rows = httpx.get(stack.url("ALERTS_PORT") + "/v1/deliveries",
                     params={"evidence_event_id": event_id},
                     headers={"Authorization": "Bearer dev-admin-token"}, timeout=30).json()
    return sum(1 for row in rows if row["handed_at"])


def test_the_broker_restarting_empty_loses_nothing_accepted(stack: Stack) -> None:
    """Canary results (each raises its own signal, with an id derived from its event id, and
    one SMS to the demo subscriber) stream in; the embedded broker is killed midway and
    started again empty by `lookout run`, which stops what talks to it until it is back.
    Every accepted result gets its SMS, exactly once."""
    sent = [_submit(stack, i) for i in range(10)]
    deadline = time.monotonic() + 60
    while not all(_handed(stack, e) for e in sent[:3]):  # the pipeline is flowing
        assert time.monotonic() < deadline, stack.out()[-4000:]
        time.sleep(0.5)
    [broker] = stack.pids("broker")
    mark = len(stack.out())
    os.kill(broker, signal.SIGKILL)
    for i in range(10, 30):
        sent.append(_submit(stack, i))
        time.sleep(0.2)
    stack.wait_for("broker exited (rc=-9)", 30, mark)
    stack.wait_for("relay: stopping until the embedded broker is back", 60, mark)
    stack.wait_for("broker started", RESTART_BACKOFF + 60, mark)
    for i in range(30, 40):
        sent.append(_submit(stack, i))
        time.sleep(0.2)
    deadline = time.monotonic() + 180
    while not all(_handed(stack, e) for e in sent):
        assert time.monotonic() < deadline, (
            [e for e in sent if not _handed(stack, e)], stack.out()[-6000:])
        time.sleep(1)
    time.sleep(5)  # anything sent twice would be by now
    counts = {e: _handed(stack, e) for e in sent}
    assert set(counts.values()) == {1}, counts
    outbox = httpx.get(stack.url("ALERTS_PORT") + "/dev/outbox.json",
                       params={"limit": 500}, timeout=30).json()
    canaries = [m for m in outbox if m["body"].startswith("[TEST]")]
    assert len(canaries) == len(sent)  # no SMS twice (the demo spike's alert is not one)
    assert "the broker lost the data" in stack.out()[mark:]


def test_killing_run_ends_every_process(stack: Stack) -> None:
    children = [pid for pid in map(int, re.findall(r"started \(pid=(\d+)\)", stack.out()))]
    live = [pid for pid in children if _alive(pid)]
    assert len(live) >= 9  # the broker and the eight processes of services.stack
    stack.proc.kill()  # SIGKILL: no chance to stop anything itself
    stack.proc.wait(10)
    deadline = time.monotonic() + 60
    while [pid for pid in live if _alive(pid)]:
        assert time.monotonic() < deadline, [pid for pid in live if _alive(pid)]
        time.sleep(0.5)
    with httpx.Client() as client:
        for port in ("INGEST_PORT", "ALERTS_PORT"):
            with pytest.raises(httpx.ConnectError):
                client.get(stack.url(port) + "/healthz", timeout=2)
