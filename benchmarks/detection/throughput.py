"""Events/s through one detection worker (targets: >= 5,000 overdose reports/s and >= 2,000
drug-check results/s on this machine).

    .venv/bin/python -m benchmarks.detection.throughput           # 60,000 reports, 30,000 results
    .venv/bin/python -m benchmarks.detection.throughput --quick   # 6,000 and 3,000

A real `lookout worker detection` process on a fresh Tansu broker. Once both agents consume,
the events (serialized beforehand) are published as fast as the producer goes (keyed by
region, as the relay does) and the clock runs until the worker's /metrics count every one
handled. Reports fall in 200 ZIP codes over 90 days with a few spikes; results in 50
regions with a realistic mix of substances (so the contamination tables fill as they
would). Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events import DetectedSubstanceV1, DrugCheckResultV1, OverdoseReportV1
from shared.substances import get_substance
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS
from testing.detection_worker import SignalReader, Worker, key_of, send_raw, tansu, topic_of

RESULTS = Path(__file__).resolve().parents[1] / "results"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIXES = [["cocaine"], ["cocaine", "caffeine"], ["fentanyl", "caffeine"], ["heroin"],
         ["fentanyl", "xylazine"], ["methamphetamine"], ["cocaine", "fentanyl"],
         ["mdma"], ["fentanyl", "bromazolam"], ["ketamine"]]


def reports(n: int, rng: random.Random) -> list[OverdoseReportV1]:
    zips = [f"us/wa/county-{i % 20}/98{i:03d}" for i in range(200)]
    span = 90 * 86400
    out = []
    for i in range(n):
        at = T0 + timedelta(seconds=span * i / n)
        z = zips[rng.randrange(len(zips))]
        out.append(OverdoseReportV1(
            producer="bench", report_id=uuid.uuid4(), source="ems", occurred_at=at,
            region_id=z, region_name=z.rsplit("/", 1)[-1]))
    return out


def results(n: int, rng: random.Random) -> list[DrugCheckResultV1]:
    regions = [f"ca/bc/area-{i % 5}/city-{i}" for i in range(50)]
    sites = [uuid.uuid4() for _ in range(20)]
    span = 90 * 86400
    out = []
    for i in range(n):
        at = T0 + timedelta(seconds=span * i / n)
        found = rng.choice(MIXES)
        subs = [DetectedSubstanceV1(raw=s, substance_id=s, status="recognized",
                                    substance_class=get_substance(s).cls.value,
                                    risk=get_substance(s).risk) for s in found]
        sold = rng.choice(["cocaine", "heroin", "fentanyl", "methamphetamine"])
        out.append(DrugCheckResultV1(
            producer="bench", result_id=uuid.uuid4(), site_id=rng.choice(sites),
            sample_id=str(i), collected_at=at, region_id=rng.choice(regions),
            region_name="bench", sold_as_raw=sold, sold_as_id=sold,
            sold_as_class=get_substance(sold).cls.value, substances=subs))
    return out


async def _publish(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> float:
    """Publish pre-serialized (topic, key, value) as fast as the producer goes (keyed by
    region, as the relay does); returns the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        pending = []
        for topic, key, value in messages:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - started
    finally:
        await producer.stop()


def _serialized(events: list[Any]) -> list[tuple[str, bytes, bytes]]:
    return [(topic_of(e), key_of(e), e.model_dump_json().encode()) for e in events]


def _worker_cpu(worker: Worker) -> float:
    """CPU seconds (user + system) the worker process has used so far."""
    assert worker.proc is not None
    fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(worker: Worker, bootstrap: str, events: list[Any], agent: str
                   ) -> tuple[float, float]:
    """Seconds until the worker has handled every event, and its CPU ms per event (the
    figure that does not depend on what else the machine is doing)."""
    messages = _serialized(events)  # before the clock starts: the worker is measured
    before = worker.handled(agent)
    cpu_before = _worker_cpu(worker)
    started = time.monotonic()
    published = await _publish(bootstrap, messages)
    print(f"{agent}: {len(messages):,} published in {published:.2f} s")
    deadline = started + 600
    while worker.handled(agent) < before + len(events):
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError(f"{agent}: handled {worker.handled(agent) - before} of "
                               f"{len(events)}\n{worker.log()[-2000:]}")
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    return elapsed, (_worker_cpu(worker) - cpu_before) * 1000 / len(events)


async def _ready(worker: Worker, bootstrap: str) -> None:
    reader = SignalReader(bootstrap, (OVERDOSE_REPORTS.dlq, DRUGCHECK_RESULTS.dlq))
    await reader.start()
    try:
        for topic in (OVERDOSE_REPORTS.name, DRUGCHECK_RESULTS.name):
            await send_raw(bootstrap, topic, b"probe", b"probe")
        ok = await reader.wait_for(lambda r: len(r.records) >= 2 or not worker.alive(), 120)
        if not ok or not worker.alive():
            raise RuntimeError(f"worker did not start\n{worker.log()[-2000:]}")
    finally:
        await reader.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reports", type=int, default=None)
    parser.add_argument("--results", type=int, default=None)
    args = parser.parse_args()
    n_reports = args.reports or (6_000 if args.quick else 60_000)
    n_results = args.results or (3_000 if args.quick else 30_000)
    rng = random.Random(4)
    report_events, result_events = reports(n_reports, rng), results(n_results, rng)
    with tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        worker = Worker(bootstrap, Path(tmp) / "var")
        worker.start()
        try:
            asyncio.run(_ready(worker, bootstrap))
            report_s, report_cpu = asyncio.run(_measure(worker, bootstrap, report_events, "spikes"))
            result_s, result_cpu = asyncio.run(_measure(worker, bootstrap, result_events,
                                            "contamination"))
        finally:
            worker.stop()
    figures: dict[str, Any] = {
        "benchmark": "detection_throughput",
        "quick": args.quick,
        "overdose_reports": n_reports,
        "overdose_reports_seconds": round(report_s, 3),
        "overdose_reports_per_s": round(n_reports / report_s, 1),
        "overdose_reports_target_per_s": 5000,
        "overdose_reports_worker_cpu_ms_each": round(report_cpu, 3),
        "drug_check_results": n_results,
        "drug_check_results_seconds": round(result_s, 3),
        "drug_check_results_per_s": round(n_results / result_s, 1),
        "drug_check_results_target_per_s": 2000,
        "drug_check_results_worker_cpu_ms_each": round(result_cpu, 3),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    figures["met"] = (figures["overdose_reports_per_s"] >= 5000
                      and figures["drug_check_results_per_s"] >= 2000)
    print(f"overdose reports:   {figures['overdose_reports_per_s']:>9,.0f} /s  (target 5,000), "
          f"worker CPU {report_cpu:.3f} ms each")
    print(f"drug-check results: {figures['drug_check_results_per_s']:>9,.0f} /s  (target 2,000), "
          f"worker CPU {result_cpu:.3f} ms each")
    print(f"load average {os.getloadavg()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_throughput{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
