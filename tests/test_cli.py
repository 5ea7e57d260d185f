"""The `lookout` command, run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from services.ingest.models import ApiKey, OutboxMessage
from shared.crypto import hash_api_key
from shared.db import session_scope
from shared.kafka import broker_answers
from shared.settings import Settings
from shared.topics import SITE_KEYS
from tests.conftest import REPO_ROOT, free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_VAR_DIR": str(tmp_path),
            "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", **extra}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_sites_create_prints_the_key_alone_on_its_last_line(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(env, "db", "upgrade").returncode == 0
    done = _run(env, "sites", "create", "Harm Reduction Hub", "--scopes", "results")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("lk_") and " " not in key
    url = env["LOOKOUT_DATABASE_URL"]
    with session_scope(url) as session:
        row = session.query(ApiKey).filter_by(key_hash=hash_api_key(key)).one()
        assert row.scopes == ["results"]
    assert key not in (tmp_path / "cli.db").read_bytes().decode("latin-1")


def test_sites_announce_sends_every_key_again_with_its_site_name(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(env, "db", "upgrade").returncode == 0
    assert _run(env, "sites", "create", "Night Van", "--scopes", "reports").returncode == 0
    assert _run(env, "sites", "create", "Hub", "--scopes", "referrals").returncode == 0
    url = env["LOOKOUT_DATABASE_URL"]
    with session_scope(url) as session:  # as a database from before every key was announced
        session.query(OutboxMessage).delete()
    done = _run(env, "sites", "announce")
    assert done.returncode == 0, done.stderr
    assert "2 site key(s) announced" in done.stdout
    with session_scope(url) as session:
        rows = session.query(OutboxMessage).all()
        announced = {json.loads(row.payload)["site_name"]: json.loads(row.payload)["scopes"]
                     for row in rows if row.topic == SITE_KEYS.name}
        keys = {row.id for row in session.query(ApiKey)}
        assert {uuid.UUID(row.key) for row in rows} == keys
    assert announced == {"Night Van": ["reports"], "Hub": ["referrals"]}


def test_smoke_fails_clearly_when_nothing_runs(tmp_path: Path) -> None:
    env = _env(tmp_path, LOOKOUT_INGEST_PORT=str(free_port()))
    done = _run(env, "smoke", "--timeout", "2")
    assert done.returncode == 1
    assert "ingest is not answering" in done.stderr


def test_broker_starts_tansu_and_waits_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "broker", "--port", str(port)],
                            env=_env(tmp_path), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"broker ready: Tansu at 127.0.0.1:{port}" in line
        assert asyncio.run(broker_answers(f"127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.wait(15)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_broker_ends_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    """`lookout broker` (and `lookout run`, which starts Tansu the same way) killed with
    SIGKILL: Tansu, in a session of its own, used to run on and hold the port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "broker", "--port", str(port)],
                            env=_env(tmp_path), cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "broker ready" in proc.stdout.readline()
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while not _port_free(port):
            assert time.monotonic() < deadline, "Tansu still holds the port"
            time.sleep(0.2)
        assert not asyncio.run(broker_answers(f"127.0.0.1:{port}"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_nothing_is_embedded_when_a_cluster_is_named(tmp_path: Path) -> None:
    done = _run(_env(tmp_path, LOOKOUT_KAFKA_BOOTSTRAP="kafka.example:9092"), "broker")
    assert done.returncode == 0 and "nothing to embed" in done.stdout
    assert not Settings(kafka_bootstrap="kafka.example:9092").embedded_broker


def test_workers_run_on_uvloop(tmp_path: Path) -> None:
    # The loop policy must be set before an app is imported (importing it creates its
    # loop); set after, it was silently ignored and every worker ran on asyncio's loop.
    code = ("import sys; from services.cli.processes import worker_app; "
            "print(*(type(worker_app(s).loop).__module__ for s in sys.argv[1:]))")
    for service in ("detection", "alerts", "referrals"):
        done = subprocess.run([sys.executable, "-c", code, service], env=_env(tmp_path),
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["uvloop"], (service, done.stdout)


def test_run_starts_everything_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`lookout run` (the README's first command, `make run`) on its embedded broker: every
    HTTP service comes up; Ctrl-C (SIGINT to the terminal's process group) stops every
    process without honcho having to SIGKILL one, and the broker with them. The broker
    used to get the Ctrl-C too and die under the stream workers, which then hung until
    killed."""
    ports = {name: str(free_port()) for name in (
        "INGEST_PORT", "ALERTS_PORT", "REFERRALS_PORT", "DASHBOARD_PORT", "BROKER_PORT",
        "DETECTION_METRICS_PORT", "ALERTS_WORKER_METRICS_PORT", "RELAY_METRICS_PORT",
        "REFERRALS_WORKER_METRICS_PORT")}
    env = _env(tmp_path, LOOKOUT_ENV="dev",
               **{f"LOOKOUT_{name}": port for name, port in ports.items()})
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env,
                            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group, as a terminal's job
    try:
        deadline = time.monotonic() + 180
        while "All HTTP services are up" not in (tmp_path / "run.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(10)  # the stream workers have joined their consumer groups
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)  # every process stopped within honcho's grace period
        out = (tmp_path / "run.log").read_text()
        assert "SIGKILL" not in out, out[-3000:]
        for name in ("ingest", "relay", "detection", "alerts-worker", "referrals-worker"):
            assert f"{name} stopped" in out, (name, out[-3000:])
        assert not asyncio.run(broker_answers(f"127.0.0.1:{ports['BROKER_PORT']}"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
