"""Detection with 1 worker and with 2 workers in one consumer group (issue 15: aggregate
events/s with 2 workers at least 1.6 x one worker's).

    .venv/bin/python -m benchmarks.detection.scaling           # 20,000 reports, 10,000 results
    .venv/bin/python -m benchmarks.detection.scaling --quick   # 6,000 and 3,000

For each worker count: a fresh Tansu broker, N `lookout worker detection` processes; once
every worker consumes (a probe on every source partition is dead-lettered, and each worker
has handled one), the events of `throughput` (reports in 200 ZIP codes, results in 50
regions, serialized beforehand, mixed in event-time order) are published as fast as the
producer goes (a backlog on every partition), and the clock runs until the workers'
/metrics count every report handled by `spikes` (the area stage), every result by
`contamination` and every forward by `novelty`. Prints events/s, the ratio and the CPU ms
per event summed over the workers; saves JSON under benchmarks/results/.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.detection.throughput import (
    RESULTS,
    _publish,
    _serialized,
    _worker_cpu,
    reports,
    results,
)
from services.detection.patterns import can_be_novel, found_substances
from shared.events import DrugCheckResultV1
from shared.topics import DETECTION_BY_SUBSTANCE, DRUGCHECK_RESULTS, OVERDOSE_REPORTS
from testing.detection_worker import Worker, tansu


def _forwards(events: list[DrugCheckResultV1]) -> int:
    """Messages the results stage forwards to the substance stage (one per result and
    through partition of its substances that can be novel)."""
    import zlib

    count = 0
    for r in events:
        keys = [f.key for f in found_substances(r) if can_be_novel(f)]
        count += len({zlib.crc32(k.encode()) % DETECTION_BY_SUBSTANCE.partitions
                      for k in keys})
    return count


async def _probe_all(bootstrap: str, workers: list[Worker]) -> None:
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
            if all(w.handled("reports") + w.handled("contamination") > 0 for w in workers):
                return
            if time.monotonic() > deadline or not all(w.alive() for w in workers):
                raise RuntimeError("workers did not start\n" +
                                   "\n".join(w.log()[-1500:] for w in workers))
    finally:
        await producer.stop()


def _total(workers: list[Worker], agent: str) -> float:
    return sum(w.handled(agent) for w in workers)


def run(count: int, events: list[Any], n_reports: int, n_results: int, forwards: int
        ) -> dict[str, Any]:
    with tansu() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        workers = [Worker(bootstrap, Path(tmp) / f"var{i}") for i in range(count)]
        for w in workers:
            w.start()
        try:
            asyncio.run(_probe_all(bootstrap, workers))
            time.sleep(2)  # the last probes handled, the group settled
            base = {a: _total(workers, a) for a in ("spikes", "contamination", "novelty")}
            want = {"spikes": n_reports, "contamination": n_results, "novelty": forwards}
            messages = _serialized(events)
            cpu_before = sum(_worker_cpu(w) for w in workers)
            load_before = os.getloadavg()
            started = time.monotonic()
            published = asyncio.run(_publish(bootstrap, messages))
            deadline = started + 900
            while any(_total(workers, a) - base[a] < n for a, n in want.items()):
                if time.monotonic() > deadline or not all(w.alive() for w in workers):
                    raise RuntimeError(f"{ {a: _total(workers, a) - base[a] for a in want} } "
                                       f"of {want}")
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu = sum(_worker_cpu(w) for w in workers) - cpu_before
        finally:
            for w in workers:
                w.stop()
    figures = {
        "workers": count, "events": len(events), "published_seconds": round(published, 3),
        "seconds": round(elapsed, 3), "events_per_s": round(len(events) / elapsed, 1),
        "workers_cpu_ms_per_event": round(cpu * 1000 / len(events), 3),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
    }
    print(f"{count} worker(s): {figures['events_per_s']:>8,.0f} events/s "
          f"({len(events):,} in {elapsed:.1f} s), workers' CPU "
          f"{figures['workers_cpu_ms_per_event']:.3f} ms per event, load {os.getloadavg()}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_reports, n_results = (6_000, 3_000) if args.quick else (20_000, 10_000)
    rng = random.Random(4)
    report_events, result_events = reports(n_reports, rng), results(n_results, rng)
    events: list[Any] = [*report_events, *result_events]
    events.sort(key=lambda e: getattr(e, "occurred_at", None) or e.collected_at)
    forwards = _forwards(result_events)
    one = run(1, events, n_reports, n_results, forwards)
    two = run(2, events, n_reports, n_results, forwards)
    ratio = two["events_per_s"] / one["events_per_s"]
    figures: dict[str, Any] = {
        "benchmark": "detection_scaling", "quick": args.quick,
        "overdose_reports": n_reports, "drug_check_results": n_results,
        "one_worker": one, "two_workers": two, "ratio": round(ratio, 3),
        "ratio_target": 1.6, "met": ratio >= 1.6,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"ratio 2 / 1 workers: {ratio:.2f} (target 1.6)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_scaling{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
