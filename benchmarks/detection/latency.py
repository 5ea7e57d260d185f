"""Latency from ingest acceptance to the signal on signals.v1 at 200 events/s (targets:
p50 < 300 ms, p99 < 1 s).

    .venv/bin/python -m benchmarks.detection.latency           # 30 s at 200/s per phase
    .venv/bin/python -m benchmarks.detection.latency --quick   # 5 s

Real processes: Tansu, `lookout serve ingest` (SQLite), `lookout relay`, `lookout worker
detection`. Phase "ingest": drug-checking results (fentanyl in a sample sold as cocaine,
each in its own ZIP code, so each raises its own signal) are POSTed at the rate; the clock
starts when the 202 arrives and stops when the first signal naming the result's event id
is read from signals.v1. Phase "kafka": the same kind of events published straight to
drugcheck.results.v1 (clock from the broker's ack), which isolates the detection worker
from ingest and the relay's outbox polling. Prints the figures and saves JSON under
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import zipcodes

from benchmarks.detection.stack import Stack, stack
from benchmarks.detection.throughput import _ready
from services.detection.harness import Event, SignalReader, produce
from shared.events import DetectedSubstanceV1, DrugCheckResultV1
from shared.regions import by_postal_code

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _zips(n: int) -> list[str]:
    codes = [str(z["zip_code"]) for z in zipcodes.list_all()
             if z["zip_code_type"] == "STANDARD" and z["county"] and z["timezone"]]
    if len(codes) < n:
        raise ValueError(f"only {len(codes)} ZIP codes for {n} events")
    return codes[:n]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1), "max_ms": round(max(values) * 1000, 1),
            "mean_ms": round(statistics.fmean(values) * 1000, 1)}


def _first_signal_times(reader: SignalReader) -> dict[str, float]:
    first: dict[str, float] = {}
    for topic, value, at in reader.records:
        if topic != "signals.v1":
            continue
        for evidence in json.loads(value).get("evidence_event_ids", []):
            first.setdefault(evidence, at)
    return first


async def _ingest_phase(s: Stack, zips: list[str], rate: float) -> dict[str, Any]:
    reader = SignalReader(s.bootstrap)
    await reader.start()
    accepted: dict[str, float] = {}
    failures = 0
    now = datetime.now(UTC) - timedelta(hours=1)
    async with httpx.AsyncClient(base_url=s.ingest_url, timeout=30,
                                 headers={"Authorization": f"Bearer {s.api_key}"},
                                 limits=httpx.Limits(max_connections=64,
                                                     max_keepalive_connections=64)) as client:

        async def post(i: int, code: str) -> None:
            nonlocal failures
            body = {"sample_id": f"lat-{i}", "collected_at": now.isoformat(),
                    "location": {"postal_code": code}, "sold_as": "cocaine",
                    "methods": ["ftir"],
                    "substances": [{"name": "Cocaine HCl"}, {"name": "Fentanyl HCl"}]}
            try:
                response = await client.post("/v1/drug-checks", json=body)
            except httpx.HTTPError:
                failures += 1
                return
            if response.status_code != 202:
                failures += 1
                return
            accepted[str(response.json()["event_id"])] = time.monotonic()

        started = time.monotonic()
        tasks = []
        for i, code in enumerate(zips):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i, code)))
        await asyncio.gather(*tasks)
        offered = len(zips) / (time.monotonic() - started)
    await reader.wait_for(lambda r: set(accepted) <= set(_first_signal_times(r)), 60)
    await reader.stop()
    first = _first_signal_times(reader)
    latencies = [first[e] - t for e, t in accepted.items() if e in first]
    return {"events": len(zips), "accepted": len(accepted), "http_failures": failures,
            "offered_per_s": round(offered, 1), "signalled": len(latencies),
            **_percentiles(latencies)}


async def _kafka_phase(s: Stack, zips: list[str], rate: float) -> dict[str, Any]:
    reader = SignalReader(s.bootstrap)
    await reader.start()
    acked: dict[str, float] = {}
    now = datetime.now(UTC) - timedelta(hours=1)
    events: list[Event] = []
    for code in zips:
        region = by_postal_code(code)
        events.append(DrugCheckResultV1(
            producer="bench", result_id=uuid.uuid4(), site_id=uuid.uuid4(), sample_id=code,
            collected_at=now, region_id=region.id, region_name=region.name,
            sold_as_raw="cocaine", sold_as_id="cocaine", sold_as_class="stimulant",
            substances=[DetectedSubstanceV1(raw="Fentanyl HCl", substance_id="fentanyl",
                                            status="recognized", substance_class="opioid",
                                            risk=3)]))

    def on_sent(event: Event, at: float) -> None:
        acked[str(event.event_id)] = at

    await produce(s.bootstrap, events, rate=rate, on_sent=on_sent)
    await reader.wait_for(lambda r: set(acked) <= set(_first_signal_times(r)), 60)
    await reader.stop()
    first = _first_signal_times(reader)
    latencies = [first[e] - t for e, t in acked.items() if e in first]
    return {"events": len(events), "signalled": len(latencies), **_percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    n = int(args.rate * seconds)
    zips = _zips(2 * n)
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (s, _keys):
        asyncio.run(_ready(s.worker, s.bootstrap))
        ingest = asyncio.run(_ingest_phase(s, zips[:n], args.rate))
        kafka = asyncio.run(_kafka_phase(s, zips[n:], args.rate))
    figures = {
        "benchmark": "detection_latency", "quick": args.quick, "rate_per_s": args.rate,
        "seconds": seconds, "ingest_to_signal": ingest, "kafka_to_signal": kafka,
        "targets": {"p50_ms": 300, "p99_ms": 1000},
        "met": bool(ingest.get("p50_ms", 1e9) < 300 and ingest.get("p99_ms", 1e9) < 1000
                    and ingest["signalled"] == ingest["events"]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for name, f in (("ingest -> signal", ingest), ("kafka  -> signal", kafka)):
        print(f"{name}: {f['signalled']}/{f['events']} signalled; p50 {f.get('p50_ms')} ms, "
              f"p95 {f.get('p95_ms')} ms, p99 {f.get('p99_ms')} ms, max {f.get('max_ms')} ms")
    print(f"targets p50 < 300 ms, p99 < 1000 ms: {'met' if figures['met'] else 'missed'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_latency{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
