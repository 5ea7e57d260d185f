"""Ingest on PostgreSQL with 1 and then 2 API workers, in one run: results/s for batches of
1,000 and for single POSTs, and the ratio of 2 workers to 1.

    .venv/bin/python -m benchmarks.ingest.workers            # 15 s per phase
    .venv/bin/python -m benchmarks.ingest.workers --quick    # 5 s per phase
    options: --database URL (default: a fresh database on the PostgreSQL at 127.0.0.1:5432,
    dropped afterwards), --clients N (concurrent single POSTs, default 32)

The stack is the real one: `lookout serve ingest` (LOOKOUT_INGEST_WORKERS = 1, then 2; each
worker commits its own groups), `lookout relay ingest` and a Tansu broker; singles come from
wrk (`make bench` installs it), batches from 4 httpx clients, a new connection per batch.
Both runs use the same database, broker and relay. Prints the figures and saves JSON under
benchmarks/results/ (with the CPU each process used, in cores, and the ingest workers' CPU
per result: on a 2-core machine the ratio says whether the second worker found a core to
run on, the CPU per result what a core of ingest delivers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.ingest.throughput import (
    LOOKOUT,
    REPO,
    RESULTS,
    _unpublished,
    batches,
    singles_httpx,
    singles_wrk,
)
from migrations import upgrade
from services.ingest.service.sites import create_site
from shared.broker import free_port, start_tansu
from shared.db import get_engine, session_scope
from shared.kafka import ensure_topics, wait_for_broker
from testing.processes import CpuShare, wait_http

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _cpu_ms(share: CpuShare, per_second: float) -> float:
    """The ingest workers' CPU per accepted result (ms): what a core of ingest costs, however
    loaded the machine was (a busy machine lowers the rate, not this much)."""
    return share.cores["ingest"] / per_second * 1000 if per_second else float("nan")


def measure(workers: int, env: dict[str, str], key: str, seconds: float, clients: int,
            tmp: Path, pids: dict[str, int]) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([LOOKOUT, "serve", "ingest"], cwd=REPO, stdout=subprocess.DEVNULL,
                              env={**env, "LOOKOUT_INGEST_PORT": str(port),
                                   "LOOKOUT_INGEST_WORKERS": str(workers)})
    try:
        wait_http(f"{base}/healthz")
        asyncio.run(singles_httpx(base, key, 1.0, 8))  # warm every worker up
        cpu = {**pids, "ingest": server.pid}
        with CpuShare(cpu) as share:
            singles = singles_wrk(base, key, seconds, clients, tmp)
        singles.pop("wrk_output", None)
        singles["cpu_cores"] = share.cores
        singles["ingest_cpu_ms_per_result"] = _cpu_ms(share, singles["per_second"])
        print(f"{workers} worker(s), single POSTs, {clients} clients: "
              f"{singles['per_second']:,.0f} results/s, p99 {singles['p99_ms']:.1f} ms, "
              f"{singles['errors']} errors, ingest CPU {singles['ingest_cpu_ms_per_result']:.2f} "
              f"ms per result; {share}", flush=True)
        with CpuShare(cpu) as share:
            batch = asyncio.run(batches(base, key, seconds, 4))
        batch["cpu_cores"] = share.cores
        batch["ingest_cpu_ms_per_result"] = _cpu_ms(share, batch["per_second"])
        print(f"{workers} worker(s), batches of 1,000, 4 clients: "
              f"{batch['per_second']:,.0f} results/s (p50 {batch['p50_ms']:.0f} ms per batch), "
              f"{batch['errors']} errors, ingest CPU {batch['ingest_cpu_ms_per_result']:.3f} ms "
              f"per result; {share}", flush=True)
    finally:
        _stop(server)
    return {"singles": singles, "batches": batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database", default="")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (or `apt-get install wrk`)",
              file=sys.stderr)
        return 2
    seconds = 5.0 if args.quick else 15.0
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-ingest-workers-"))
    made = ""
    url = args.database
    if not url:
        made = f"lookout_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{made}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{made}"
    upgrade(url)
    with session_scope(url) as session:
        _, key = create_site(session, f"bench-{uuid.uuid4().hex[:6]}", ["results"])
    broker_port = free_port()
    bootstrap = f"127.0.0.1:{broker_port}"
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_DATABASE_URL": url,
           "LOOKOUT_VAR_DIR": str(tmp), "LOOKOUT_KAFKA_BOOTSTRAP": bootstrap,
           "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
           "LOOKOUT_RELAY_METRICS_PORT": str(free_port()),
           "LOOKOUT_INGEST_RATE_PER_SECOND": "1000000", "LOOKOUT_INGEST_RATE_BURST": "1000000"}
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
        "database": "postgresql", "quick": args.quick, "phase_seconds": seconds,
        "clients": args.clients}
    broker = start_tansu("127.0.0.1", broker_port, tmp / "tansu.log")
    relay: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(wait_for_broker(bootstrap, 30))
        asyncio.run(ensure_topics(bootstrap))
        relay = subprocess.Popen([LOOKOUT, "relay", "ingest"], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL)
        pids = {"relay": relay.pid, "broker": broker.pid}
        for workers in (1, 2):
            report[f"workers_{workers}"] = measure(workers, env, key, seconds, args.clients,
                                                   tmp, pids)
        one, two = report["workers_1"], report["workers_2"]
        report["ratio_2_to_1"] = {
            kind: two[kind]["per_second"] / one[kind]["per_second"]
            for kind in ("singles", "batches")}
        report["batches_to_singles"] = {
            f"workers_{w}": report[f"workers_{w}"]["batches"]["per_second"]
            / report[f"workers_{w}"]["singles"]["per_second"] for w in (1, 2)}
        total, left = _unpublished(url)
        t0 = time.perf_counter()
        while left and time.perf_counter() - t0 < 300:
            time.sleep(0.5)
            total, left = _unpublished(url)
        report["relay"] = {"outbox_rows": total, "left": left,
                           "drain_seconds_after_load": time.perf_counter() - t0}
        ratio = report["ratio_2_to_1"]
        print(f"2 workers / 1 worker: singles {ratio['singles']:.2f} x, "
              f"batches {ratio['batches']:.2f} x; batches / singles: "
              + ", ".join(f"{k} {v:.1f} x" for k, v in report["batches_to_singles"].items()))
        print(f"relay: {total:,} outbox rows, {left} left after the load")
    finally:
        if relay is not None:
            _stop(relay)
        _stop(broker)
        if made:
            get_engine(url).dispose()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"ingest_workers_postgresql{'_quick' if args.quick else ''}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
