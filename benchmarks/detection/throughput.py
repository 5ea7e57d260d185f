"""Events/s through one detection worker (targets: >= 5,000 overdose reports/s and >= 2,000
drug-check results/s on this machine).

    .venv/bin/python -m benchmarks.detection.throughput           # 60,000 reports, 30,000 results
    .venv/bin/python -m benchmarks.detection.throughput --quick   # 6,000 and 3,000
    .venv/bin/python -m benchmarks.detection.throughput --workers [--quick]  # 1 vs 2 workers
    .venv/bin/python -m benchmarks.detection.throughput --quick --profile /tmp/prof  # py-spy

A real `lookout worker detection` process on a fresh Tansu broker. Once both agents consume,
the events (serialized beforehand) are published as fast as the producer goes (keyed by
region, as the relay does) and the clock runs until the worker's /metrics count every one
handled. Reports fall in 200 ZIP codes over 90 days with a few spikes; results in 50
regions with a realistic mix of substances (so the contamination tables fill as they
would). Prints the figures and saves JSON under benchmarks/results/.

`--workers`: one worker, then two in one consumer group, each on a fresh broker; once every
worker consumes, reports (over eight states: a state's reports are one partition) and
results mixed in event-time order are published as fast as the producer goes (a backlog
on every partition), and the clock runs until the workers' /metrics count every one
handled. Prints the aggregate events/s of each and the ratio (issue 15: at least 1.6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
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


def reports(n: int, rng: random.Random, states: int = 1) -> list[OverdoseReportV1]:
    zips = [f"us/s{i % states}/county-{i % 20}/98{i:03d}" if states > 1 else
            f"us/wa/county-{i % 20}/98{i:03d}" for i in range(200)]
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


def _profiler(worker: Worker, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the worker (raw folded stacks, only samples holding the GIL)."""
    assert worker.proc is not None
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--gil", "-r", "200", "-f", "raw", "-p",
                             str(worker.proc.pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _measure(worker: Worker, bootstrap: str, events: list[Any], agent: str,
                   profile: Path | None = None) -> tuple[float, float]:
    """Seconds until the worker has handled every event, and its CPU ms per event (the
    figure that does not depend on what else the machine is doing); with `profile`, a
    py-spy of the worker over that time in `profile/<agent>.txt`."""
    messages = _serialized(events)  # before the clock starts: the worker is measured
    spy = _profiler(worker, profile / f"{agent}.txt") if profile else None
    if spy is not None:
        await asyncio.sleep(1)  # py-spy attached
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
    cpu = (_worker_cpu(worker) - cpu_before) * 1000 / len(events)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    return elapsed, cpu


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


async def _probe_all(bootstrap: str, workers: list[Worker]) -> None:
    """Probes on every source partition until every worker has handled one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        deadline = time.monotonic() + 240
        while True:
            for topic in (OVERDOSE_REPORTS, DRUGCHECK_RESULTS):
                for p in range(topic.partitions):
                    await producer.send_and_wait(topic.name, b"probe", key=b"probe",
                                                 partition=p)
            await asyncio.sleep(2)
            if all(w.handled("spikes") + w.handled("contamination") > 0 for w in workers):
                return
            if time.monotonic() > deadline or not all(w.alive() for w in workers):
                raise RuntimeError("workers did not start\n" +
                                   "\n".join(w.log()[-1500:] for w in workers))
    finally:
        await producer.stop()


def _handled(workers: list[Worker]) -> float:
    return sum(w.handled("spikes") + w.handled("contamination") for w in workers)


def _group(count: int, events: list[Any]) -> dict[str, Any]:
    with tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        workers = [Worker(bootstrap, Path(tmp) / f"var{i}") for i in range(count)]
        for w in workers:
            w.start()
        try:
            asyncio.run(_probe_all(bootstrap, workers))
            time.sleep(3)  # the last probes handled, the group settled
            base = _handled(workers)
            messages = _serialized(events)
            cpu_before = sum(_worker_cpu(w) for w in workers)
            load_before = os.getloadavg()
            started = time.monotonic()
            asyncio.run(_publish(bootstrap, messages))
            while _handled(workers) - base < len(events):
                if time.monotonic() > started + 900 or not all(w.alive() for w in workers):
                    raise RuntimeError(f"handled {_handled(workers) - base} of {len(events)}")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu = sum(_worker_cpu(w) for w in workers) - cpu_before
        finally:
            for w in workers:
                w.stop()
    figures = {"workers": count, "events": len(events), "seconds": round(elapsed, 3),
               "events_per_s": round(len(events) / elapsed, 1),
               "workers_cpu_ms_per_event": round(cpu * 1000 / len(events), 3),
               "load_average_before": load_before, "load_average_after": os.getloadavg()}
    print(f"{count} worker(s): {figures['events_per_s']:>8,.0f} events/s ({len(events):,} in "
          f"{elapsed:.1f} s), workers' CPU {figures['workers_cpu_ms_per_event']:.3f} ms per "
          f"event, load {load_before} -> {os.getloadavg()}")
    return figures


def workers_main(quick: bool) -> None:
    n_reports, n_results = (6_000, 3_000) if quick else (20_000, 10_000)
    rng = random.Random(4)
    events: list[Any] = [*reports(n_reports, rng, states=8), *results(n_results, rng)]
    events.sort(key=lambda e: getattr(e, "occurred_at", None) or e.collected_at)
    one = _group(1, events)
    two = _group(2, events)
    ratio = two["events_per_s"] / one["events_per_s"]
    figures: dict[str, Any] = {
        "benchmark": "detection_workers", "quick": quick, "overdose_reports": n_reports,
        "drug_check_results": n_results, "one_worker": one, "two_workers": two,
        "ratio": round(ratio, 3), "ratio_target": 1.6, "met": ratio >= 1.6,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"ratio 2 / 1 workers: {ratio:.2f} (target 1.6)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_workers{'_quick' if quick else ''}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", action="store_true", help="1 vs 2 workers")
    parser.add_argument("--reports", type=int, default=None)
    parser.add_argument("--results", type=int, default=None)
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the worker (raw folded stacks) into this folder")
    args = parser.parse_args()
    if args.workers:
        workers_main(args.quick)
        return
    n_reports = args.reports or (6_000 if args.quick else 60_000)
    n_results = args.results or (3_000 if args.quick else 30_000)
    rng = random.Random(4)
    report_events, result_events = reports(n_reports, rng), results(n_results, rng)
    with tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        worker = Worker(bootstrap, Path(tmp) / "var")
        worker.start()
        try:
            asyncio.run(_ready(worker, bootstrap))
            report_s, report_cpu = asyncio.run(_measure(worker, bootstrap, report_events, "spikes",
                                                        args.profile))
            result_s, result_cpu = asyncio.run(_measure(worker, bootstrap, result_events,
                                                        "contamination", args.profile))
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
