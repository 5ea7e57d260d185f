"""From a signal on `signals.v1` to its event in a connected SSE client (target p99 < 1 s).

    .venv/bin/python -m benchmarks.dashboard.sse_latency            # 200 signals/s for 30 s
    .venv/bin/python -m benchmarks.dashboard.sse_latency --quick    # 200 signals/s for 8 s

A Tansu broker of its own, a migrated SQLite database, the real `lookout worker dashboard`
process and the dashboard web app in a process of its own (`--serve`, with the officials'
sign-in dependency stubbed: this measures the data path, not the login). The client reads
`/stream` with httpx; a signal's latency is the time from just before it is produced to its
`signal` event being read. Both ends are in this process, on one clock.
Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from migrations import upgrade
from services.dashboard.models import Change
from services.stack import command
from shared.broker import free_port, running_tansu
from shared.db import session_scope
from shared.events import SpikeSignalV1
from shared.topics import SIGNALS
from testing.processes import wait_http

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_P99_S = 1.0


def serve(port: int) -> None:
    """The dashboard app with the sign-in stubbed (benchmark only)."""
    import uvicorn

    from services.dashboard import stream
    from services.dashboard.api import app

    app.dependency_overrides[stream.signed_in_official] = lambda: "benchmark"
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _signal(i: int) -> SpikeSignalV1:
    now = datetime.now(UTC)
    zip_code = 98101 + i % 50
    return SpikeSignalV1(
        producer="benchmark", region_id=f"us/wa/king-county/{zip_code}",
        region_name=f"{zip_code} (Seattle, WA)", severity="warning", occurred_at=now,
        window_start=now - timedelta(days=1), window_end=now, observed=9, expected=2,
        upperbound=6, method="poisson", score=4.1)


async def _produce(bootstrap: str, rate: float, seconds: float,
                   sent: dict[str, float]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        total = int(rate * seconds)
        started = time.monotonic()
        for i in range(total):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            signal = _signal(i)
            sent[str(signal.event_id)] = time.time()
            await producer.send(SIGNALS.name, signal.model_dump_json().encode(),
                                key=signal.region_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _listen(url: str, received: dict[str, float], stop: asyncio.Event,
                  connected: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client, \
            client.stream("GET", url) as response:
        response.raise_for_status()
        connected.set()
        event = data = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif not line and event == "signal" and data:
                received[json.loads(data)["id"]] = time.time()
                event = data = None
            if stop.is_set():
                return


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def _stored_at(db: str) -> dict[str, float]:
    """When the worker wrote each signal's change row (its part of the latency)."""
    with session_scope(db) as session:
        return {ref: at.timestamp() for ref, at in session.execute(
            select(Change.ref, Change.at).where(Change.kind == "signal"))}


async def _run(bootstrap: str, base: str, db: str, rate: float,
               seconds: float) -> dict[str, Any]:
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    stop, connected = asyncio.Event(), asyncio.Event()
    listener = asyncio.create_task(_listen(f"{base}/stream", received, stop, connected))
    await asyncio.wait_for(connected.wait(), 30)
    # Warm up: one signal through the whole path (the worker's group join, first fetch).
    warm: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while not set(warm) & set(received):
        if time.monotonic() > deadline:
            raise TimeoutError("the warm-up signal never reached the stream")
        await _produce(bootstrap, 1, 1, warm)
        await asyncio.sleep(2)
    await _produce(bootstrap, rate, seconds, sent)
    deadline = time.monotonic() + 30
    while set(sent) - set(received) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    stop.set()
    listener.cancel()
    latencies = [received[k] - sent[k] for k in sent if k in received]
    stored = await asyncio.to_thread(_stored_at, db)
    in_model = [stored[k] - sent[k] for k in sent if k in stored]
    return {"sent": len(sent), "received": len(latencies),
            "to_read_model_p50_s": round(_quantile(in_model, 0.5), 4) if in_model else None,
            "to_read_model_p99_s": round(_quantile(in_model, 0.99), 4) if in_model else None,
            "p50_s": round(_quantile(latencies, 0.5), 4) if latencies else None,
            "p90_s": round(_quantile(latencies, 0.9), 4) if latencies else None,
            "p99_s": round(_quantile(latencies, 0.99), 4) if latencies else None,
            "max_s": round(max(latencies), 4) if latencies else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 s instead of 30 s")
    parser.add_argument("--rate", type=float, default=200.0, help="signals per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    seconds = 8.0 if args.quick else args.seconds
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lookout-sse-") as tmp, running_tansu() as bootstrap:
        db = f"sqlite:///{Path(tmp) / 'lookout.db'}"
        upgrade(db)
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOOKOUT_ENV": "test",
               "LOOKOUT_VAR_DIR": str(Path(tmp) / "var"), "LOOKOUT_DATABASE_URL": db,
               "LOOKOUT_KAFKA_BOOTSTRAP": bootstrap,
               "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false",
               "LOOKOUT_DASHBOARD_WORKER_METRICS_PORT": str(free_port()),
               "LOOKOUT_DASHBOARD_PORT": str(port)}
        logs = Path(tmp) / "logs"
        logs.mkdir()
        procs = [
            subprocess.Popen(command("dashboard-worker"), env=env, cwd=REPO_ROOT,
                             stdout=(logs / "worker.log").open("wb"), stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, "-m", "benchmarks.dashboard.sse_latency",
                              "--serve", str(port)], env=env, cwd=REPO_ROOT,
                             stdout=(logs / "web.log").open("wb"), stderr=subprocess.STDOUT),
        ]
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", within=180)
            figures = asyncio.run(_run(bootstrap, base, db, args.rate, seconds))
        except Exception:
            for name in ("worker.log", "web.log"):
                print((logs / name).read_text(errors="replace")[-2000:], file=sys.stderr)
            raise
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    load1 = os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "dashboard.sse_latency", "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "at": datetime.now(UTC).isoformat(), "rate_per_s": args.rate, "seconds": seconds,
        "database": "sqlite", "load_average_start": load0, "load_average_end": load1,
        **figures, "target_p99_s": TARGET_P99_S}
    result["pass"] = figures["p99_s"] is not None and figures["received"] == figures["sent"] \
        and figures["p99_s"] < TARGET_P99_S
    print(f"signals.v1 -> SSE client at {args.rate:.0f} signals/s for {seconds:.0f} s "
          f"(load {load0[0]:.1f} -> {load1[0]:.1f} on {os.cpu_count()} cpus): "
          f"{figures['received']}/{figures['sent']} received; in the read model p50 "
          f"{figures['to_read_model_p50_s']} s, p99 {figures['to_read_model_p99_s']} s; "
          f"in the client p50 {figures['p50_s']} s, "
          f"p90 {figures['p90_s']} s, p99 {figures['p99_s']} s, max {figures['max_s']} s")
    print(f"target p99 < {TARGET_P99_S} s: {'PASS' if result['pass'] else 'FAIL'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dashboard_sse_latency{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
