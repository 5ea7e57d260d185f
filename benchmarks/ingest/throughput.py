"""Ingest throughput against a real uvicorn process, a real relay and the same Tansu broker.

    .venv/bin/python -m benchmarks.ingest.throughput            # 20 s per phase
    .venv/bin/python -m benchmarks.ingest.throughput --quick    # 4 s per phase
    options: --workers N (uvicorn workers, default 2), --client wrk|httpx (default wrk, which
    `make bench` installs; without it the run stops: httpx's client would measure itself),
    --database URL (default: a SQLite file in WAL mode)

Phases, in one run:
1. raw aiokafka produce rate (acks=all, the relay's settings) of event-sized messages to the
   same broker: the ceiling the relay could reach;
2. single-result POSTs from 32 concurrent clients (targets: >= 1,000 results/s, p99 < 100 ms);
3. batches of 1,000 results from 4 concurrent clients, a new connection per batch (target:
   >= 10,000 results/s);
then the time the relay needs to publish everything accepted (so the end-to-end rate too).
Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from migrations import upgrade
from services.ingest.models import OutboxMessage
from services.ingest.service.sites import create_site
from shared.broker import free_port, start_tansu
from shared.db import session_scope
from shared.kafka import ensure_topics, wait_for_broker
from testing.processes import CpuShare, wait_http

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO = Path(__file__).resolve().parents[2]
LOOKOUT = str(Path(sys.executable).parent / "lookout")
ZIPS = ["98104", "98101", "98122", "10001", "94103", "60614", "02139", "97201"]
SUBSTANCES = [["Cocaine HCl", "Fentanyl HCl"], ["Fentanyl HCl", "Caffeine"], ["MDMA"],
              ["Heroin HCl", "Xylazine"], ["Methamphetamine HCl"]]


def result(sample_id: str, i: int) -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "collected_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        "location": {"postal_code": ZIPS[i % len(ZIPS)]},
        "sold_as": "cocaine", "form": "powder", "methods": ["ftir", "fentanyl_strip"],
        "substances": [{"name": n} for n in SUBSTANCES[i % len(SUBSTANCES)]],
        "strips": {"fentanyl_strip": "positive"},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def raw_produce_rate(bootstrap: str, seconds: float, size: int) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    payload = b"x" * size
    sent, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            futures = [await producer.send("bench.raw.v1", value=payload,
                                           key=ZIPS[(sent + i) % len(ZIPS)].encode())
                       for i in range(5000)]
            await asyncio.gather(*futures)
            sent += len(futures)
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - start
    return {"messages": sent, "seconds": elapsed, "per_second": sent / elapsed,
            "message_bytes": size}


async def singles_httpx(base: str, key: str, seconds: float, clients: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            i = 0
            while time.perf_counter() < stop_at:
                body = json.dumps(result(f"s-{n}-{i}-{uuid.uuid4().hex[:6]}", i))
                t0 = time.perf_counter()
                response = await http.post("/v1/drug-checks", content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                errors += response.status_code != 202
                i += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - start
    return {"client": "httpx", "requests": len(latencies), "errors": errors,
            "seconds": elapsed, "per_second": (len(latencies) - errors) / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


WRK_SCRIPT = """
local counter = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) prefix = args[1] .. "-" .. tid end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer __KEY__"
local template = [[__BODY__]]
local zips = {__ZIPS__}
function request()
  counter = counter + 1
  local body = template:gsub("__SAMPLE__", prefix .. "-" .. counter)
  body = body:gsub("__ZIP__", zips[(counter %% #zips) + 1])
  return wrk.format(nil, "/v1/drug-checks", nil, body)
end
"""


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def healthz_wrk(base: str, seconds: float, clients: int) -> dict[str, Any]:
    """The stack's floor on this machine right now: GET /healthz (one `SELECT 1` through the
    same app, middleware and thread pool)."""
    run = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{max(1, int(seconds))}s",
                          "--latency", f"{base}/healthz"],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", run.stdout).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", run.stdout, re.MULTILINE))
    return {"per_second": rate, "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"])}


def singles_wrk(base: str, key: str, seconds: float, clients: int, tmp: Path) -> dict[str, Any]:
    body = json.dumps(result("__SAMPLE__", 0)).replace('"98104"', '"__ZIP__"')
    script = (WRK_SCRIPT.replace("%%", "%").replace("__KEY__", key)
              .replace("__BODY__", body)
              .replace("__ZIPS__", ", ".join(f'"{z}"' for z in ZIPS)))
    path = tmp / "singles.lua"
    path.write_text(script)
    run = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--latency",
         "-s", str(path), base, "--", uuid.uuid4().hex[:8]],
        capture_output=True, text=True, timeout=seconds + 60, check=True)
    out = run.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed_text = re.search(r"requests in ([\d.]+\w+),", out).group(1)  # type: ignore[union-attr]
    elapsed = _ms(elapsed_text) / 1000
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    lat = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "99" not in lat:
        raise RuntimeError(f"unexpected wrk output:\n{out}\n{run.stderr}")
    return {"client": "wrk", "requests": requests, "errors": errors, "seconds": elapsed,
            "per_second": (requests - errors) / elapsed, "p50_ms": _ms(lat["50"]),
            "p90_ms": _ms(lat["90"]), "p99_ms": _ms(lat["99"]), "wrk_output": out}


async def batches(base: str, key: str, seconds: float, clients: int,
                  size: int = 1000) -> dict[str, Any]:
    accepted, requests, errors = 0, 0, 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # One body made once; each batch gets its own sample ids by a replace (building 1,000
    # results in Python per batch took CPU from the server on this 2-core machine).
    template = json.dumps({"results": [result(f"__TAG__-{i}", i) for i in range(size)]})

    async def client(n: int) -> None:
        nonlocal accepted, requests, errors
        # A new connection per batch, as a site's upload job makes (and so the kernel
        # spreads batches over ingest's workers; 4 kept-alive connections land 4:0 or 3:1 on
        # two workers more often than not, leaving one a core of work and the other idle).
        async with httpx.AsyncClient(base_url=base, timeout=60,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as http:
            b = 0
            while time.perf_counter() < stop_at:
                body = template.replace("__TAG__", f"b-{n}-{b}-{uuid.uuid4().hex[:6]}")
                t0 = time.perf_counter()
                response = await http.post("/v1/drug-checks", content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                requests += 1
                if response.status_code == 202:
                    found = re.match(rb'\{"accepted":(\d+)', response.content)
                    accepted += int(found.group(1)) if found else response.json()["accepted"]
                else:
                    errors += 1
                b += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - start
    return {"batch_size": size, "clients": clients, "requests": requests, "errors": errors,
            "accepted": accepted, "seconds": elapsed, "per_second": accepted / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000}


def _unpublished(url: str) -> tuple[int, int]:
    with session_scope(url) as session:
        total = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
        left = session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.published_at.is_(None))) or 0
    return int(total), int(left)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk")
    parser.add_argument("--database", default="")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    if args.client == "wrk" and not shutil.which("wrk"):
        print("wrk is missing: `make bench` installs it (or `apt-get install wrk`); "
              "--client httpx measures the Python client more than the service", file=sys.stderr)
        return 2
    seconds = 4.0 if args.quick else 20.0
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-ingest-"))
    url = args.database or f"sqlite:///{tmp / 'ingest.db'}"
    upgrade(url)
    with session_scope(url) as session:
        _, key = create_site(session, f"bench-{uuid.uuid4().hex[:6]}", ["results"])

    broker_port, http_port, metrics_port = free_port(), free_port(), free_port()
    bootstrap = f"127.0.0.1:{broker_port}"
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_DATABASE_URL": url,
           "LOOKOUT_VAR_DIR": str(tmp), "LOOKOUT_KAFKA_BOOTSTRAP": bootstrap,
           "LOOKOUT_KAFKA_IDEMPOTENT_PRODUCER": "false", "LOOKOUT_INGEST_PORT": str(http_port),
           "LOOKOUT_RELAY_METRICS_PORT": str(metrics_port),
           "LOOKOUT_INGEST_WORKERS": str(args.workers),
           # the limiter stays in the path, set far above the load
           "LOOKOUT_INGEST_RATE_PER_SECOND": "1000000", "LOOKOUT_INGEST_RATE_BURST": "1000000"}
    procs: list[subprocess.Popen[bytes]] = []
    broker = start_tansu("127.0.0.1", broker_port, tmp / "tansu.log")
    procs.append(broker)
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
        "database": url.split(":")[0], "workers": args.workers,
        "quick": args.quick, "phase_seconds": seconds}
    try:
        asyncio.run(wait_for_broker(bootstrap, 30))
        asyncio.run(ensure_topics(bootstrap))
        base = f"http://127.0.0.1:{http_port}"
        procs.append(subprocess.Popen([LOOKOUT, "serve", "ingest"], env=env, cwd=REPO,
                                      stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([LOOKOUT, "relay", "ingest"], env=env, cwd=REPO,
                                      stdout=subprocess.DEVNULL))
        wait_http(f"{base}/healthz")
        # warm up every worker (imports, caches)
        asyncio.run(singles_httpx(base, key, 1.0, 8))

        size = len(json.dumps(result("x" * 20, 0))) * 2  # about an event's size
        cpu = {"ingest": procs[1].pid, "relay": procs[2].pid, "broker": broker.pid}
        with CpuShare(cpu) as share:
            report["raw_produce"] = asyncio.run(raw_produce_rate(bootstrap, seconds, size))
        report["raw_produce"]["cpu_cores"] = share.cores
        print(f"raw aiokafka produce: {report['raw_produce']['per_second']:,.0f} msg/s "
              f"({size} B, acks=all); {share}", flush=True)

        if args.client == "wrk":
            with CpuShare(cpu) as share:
                report["healthz"] = healthz_wrk(base, seconds, args.clients)
            report["healthz"]["cpu_cores"] = share.cores
            print(f"GET /healthz (the stack's floor), {args.clients} clients: "
                  f"{report['healthz']['per_second']:,.0f} requests/s, "
                  f"p99 {report['healthz']['p99_ms']:.1f} ms; {share}", flush=True)
            with CpuShare(cpu) as share:
                singles = singles_wrk(base, key, seconds, args.clients, tmp)
        else:
            with CpuShare(cpu) as share:
                singles = asyncio.run(singles_httpx(base, key, seconds, args.clients))
        singles["cpu_cores"] = share.cores
        report["singles"] = singles
        print(f"single POSTs, {args.clients} clients ({singles['client']}): "
              f"{singles['per_second']:,.0f} results/s, p50 {singles['p50_ms']:.1f} ms, "
              f"p99 {singles['p99_ms']:.1f} ms, {singles['errors']} errors; {share}",
              flush=True)

        with CpuShare(cpu) as share:
            report["batches"] = asyncio.run(batches(base, key, seconds, 4))
        b = report["batches"]
        b["cpu_cores"] = share.cores
        print(f"batches of 1,000, 4 clients: {b['per_second']:,.0f} results/s "
              f"(p50 {b['p50_ms']:.0f} ms per batch), {b['errors']} errors; {share}",
              flush=True)

        total, left = _unpublished(url)
        t0 = time.perf_counter()
        while left and time.perf_counter() - t0 < 600:
            time.sleep(0.5)
            total, left = _unpublished(url)
        drain = time.perf_counter() - t0
        report["relay"] = {"outbox_rows": total, "left_after_load": left,
                           "drain_seconds_after_load": drain}
        print(f"relay: {total:,} rows in the outbox, all published {drain:.1f}s after the "
              f"load ended" + (f" ({left} still pending!)" if left else ""), flush=True)

        raw = report["raw_produce"]["per_second"]
        report["ratio_to_raw_produce"] = {"singles": singles["per_second"] / raw,
                                          "batches": b["per_second"] / raw}
        report["targets"] = {
            "singles_1000_per_s": singles["per_second"] >= 1000,
            "singles_p99_under_100ms": singles["p99_ms"] < 100,
            "batches_10000_per_s": b["per_second"] >= 10000}
        print(f"ratio to raw produce: singles {report['ratio_to_raw_produce']['singles']:.3f}, "
              f"batches {report['ratio_to_raw_produce']['batches']:.3f}")
        print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}"
                                      for k, v in report["targets"].items()))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"ingest_throughput_w{args.workers}{'_quick' if args.quick else ''}.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
