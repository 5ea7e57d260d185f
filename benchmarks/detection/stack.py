"""Ingest, relay and the detection worker as real processes on a fresh Tansu broker and a
temporary SQLite database (for the latency benchmark and the BC backtest)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.stack import command
from shared.settings import REPO_ROOT
from testing.detection_worker import Worker, free_port, tansu


@dataclass
class Stack:
    bootstrap: str
    ingest_url: str
    api_key: str
    worker: Worker
    database_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)  # ingest, relay, worker


def _lookout(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"lookout {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def stack(tmp: Path, sites: int = 1, extra_env: dict[str, str] | None = None
          ) -> Iterator[tuple[Stack, list[str]]]:
    """Yields the stack and `sites` API keys (one site each)."""
    with tansu() as bootstrap:
        ingest_port = free_port()
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LOOKOUT_ENV": "test",
            "LOOKOUT_VAR_DIR": str(tmp / "var"),
            "LOOKOUT_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "LOOKOUT_KAFKA_BOOTSTRAP": bootstrap,
            "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
            "LOOKOUT_INGEST_PORT": str(ingest_port),
            "LOOKOUT_RELAY_METRICS_PORT": str(free_port()),
            "LOOKOUT_INGEST_RATE_PER_SECOND": "0",
            **(extra_env or {}),
        }
        _lookout(env, "db", "upgrade")
        keys = [_lookout(env, "sites", "create", f"bench-site-{i}").strip().splitlines()[-1]
                for i in range(sites)]
        logs: list[IO[bytes]] = []
        procs: list[subprocess.Popen[bytes]] = []
        worker = Worker(bootstrap, tmp / "var", {k: v for k, v in env.items()
                                                  if k.startswith("LOOKOUT_")})
        try:
            for name in ("ingest", "relay"):
                log = (tmp / f"{name}.log").open("wb")
                logs.append(log)
                procs.append(subprocess.Popen(command(name), env=env, cwd=REPO_ROOT,
                                              stdout=log, stderr=subprocess.STDOUT))
            worker.start()
            url = f"http://127.0.0.1:{ingest_port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("ingest did not come up")
                time.sleep(0.2)
            assert worker.proc is not None
            pids = {"ingest": procs[0].pid, "relay": procs[1].pid, "worker": worker.proc.pid}
            yield Stack(bootstrap, url, keys[0], worker, env["LOOKOUT_DATABASE_URL"],
                        pids), keys
        finally:
            worker.stop()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for handle in logs:
                handle.close()
