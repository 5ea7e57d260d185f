"""A stream worker while the broker is away: its output stays a few lines a second (every
aiokafka client logged each retry: about 66 lines a second per worker, 260 under
`lookout run`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from services.stack import command
from shared.broker import start_tansu
from tests.conftest import REPO_ROOT, MigratedSqlite, free_port

AWAY = 8.0  # s


def test_a_worker_logs_a_few_lines_a_second_while_the_broker_is_away(
        tmp_path: Path, migrated_sqlite: MigratedSqlite) -> None:
    port = free_port()
    url = migrated_sqlite(tmp_path / "w.db")
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_DATABASE_URL": url,
           "LOOKOUT_VAR_DIR": str(tmp_path), "LOOKOUT_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
           "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false", "LOOKOUT_STREAM_SESSION_TIMEOUT": "30",
           "LOOKOUT_REFERRALS_WORKER_METRICS_PORT": str(free_port())}
    broker = start_tansu("127.0.0.1", port)
    log = tmp_path / "worker.log"
    with log.open("w") as fh:
        worker = subprocess.Popen(command("referrals-worker"), env=env, cwd=REPO_ROOT,
                                  stdout=fh, stderr=subprocess.STDOUT)
    try:
        metrics = f"http://127.0.0.1:{env['LOOKOUT_REFERRALS_WORKER_METRICS_PORT']}/metrics"
        deadline = time.monotonic() + 120
        while True:  # up (metrics answer), then in its group and fetching
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                httpx.get(metrics, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        time.sleep(25)  # Tansu delays a first group join by half the session timeout
        broker.terminate()
        broker.wait(10)
        start = len(log.read_bytes())
        time.sleep(AWAY)
        window = log.read_bytes()[start:].decode(errors="replace")
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        if broker.poll() is None:
            broker.terminate()
            broker.wait(10)
        worker.kill()  # with the broker gone, faust's stop waits on it for long
        worker.wait(30)
    lines = window.splitlines()
    print(f"{len(lines) / AWAY:.1f} lines/s while the broker was away")
    assert len(lines) / AWAY < 5, "\n".join(lines[:40])
