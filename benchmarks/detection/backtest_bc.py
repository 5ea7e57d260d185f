"""Backtest: the Drug Checking BC results 2018-2020 replayed through ingest, Kafka and
detection; contamination signals per city and month, and the delay from first sample to
signal.

    .venv/bin/python -m benchmarks.detection.backtest_bc            # every row (15,300)
    .venv/bin/python -m benchmarks.detection.backtest_bc --quick    # the first 3 months

Real processes (Tansu, `lookout serve ingest` on SQLite, `lookout relay`, `lookout worker
detection`). Each BC collection site gets its own Lookout site and API key (so multi-site
clusters can be seen), and the export is uploaded as it would have arrived: day by day in
date order (the file is newest first), one `POST /v1/drug-checks/csv` per site and day,
the CSV lines untouched. Ingest resolves "City/Town" to a region (`ca/bc/<area>/<city>`;
"Mail In" has no place and is rejected) and publishes each accepted result through its
outbox; the worker runs with the default settings.

Delay from first sample to signal, per signal, in event time: the signal's own time minus
the earliest collection time among its evidence (0 for a single-sample pattern; the span
of the cluster or of the rising week otherwise). "Pipeline" is wall-clock: from the
result's arrival on drugcheck.results.v1 to the signal on signals.v1. Prints the tables
and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.detection.stack import Stack, stack
from benchmarks.detection.throughput import _ready
from shared.settings import REPO_ROOT
from shared.topics import DRUGCHECK_RESULTS, SIGNALS
from testing.detection_worker import SignalReader

DATA = REPO_ROOT.parent / "shared" / "data" / "drugcheckingbc-2018-2020.csv"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def _days(quick: bool) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """The header line and, per date (ascending), per BC site, the CSV lines as in the file."""
    text = DATA.read_text(encoding="utf-8")
    lines = text.splitlines()
    header, body = lines[0], lines[1:]
    by_day: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for line in body:
        row = next(csv.reader(io.StringIO(line)))
        by_day[row[0]][row[1]].append(line)
    dates = sorted(by_day)
    if quick:
        dates = [d for d in dates if d < _months_after(dates[0], 3)]
    return [header], {d: by_day[d] for d in dates}


def _months_after(day: str, months: int) -> str:
    y, m = int(day[:4]), int(day[5:7]) + months
    return f"{y + (m - 1) // 12:04d}-{(m - 1) % 12 + 1:02d}-01"


async def site_keys(client: httpx.AsyncClient, sites: list[str]) -> dict[str, str]:
    """A Lookout site (and its API key) per BC collection site, so that multi-site clusters
    can be seen."""
    keys: dict[str, str] = {}
    for site in sites:
        r = await client.post("/v1/admin/sites", json={"name": site or "unnamed"},
                              headers={"Authorization": "Bearer dev-admin-token"})
        r.raise_for_status()
        keys[site] = r.json()["api_key"]
    return keys


async def _upload(s: Stack, header: str, days: dict[str, dict[str, list[str]]],
                  reader: SignalReader) -> dict[str, Any]:
    sites = sorted({site for per_site in days.values() for site in per_site})
    counts: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=s.ingest_url, timeout=60) as client:
        keys = await site_keys(client, sites)
        for day, per_site in days.items():
            for site, lines in per_site.items():
                r = await client.post(
                    "/v1/drug-checks/csv", content="\n".join([header, *lines]) + "\n",
                    headers={"Authorization": f"Bearer {keys[site]}",
                             "Content-Type": "text/csv"})
                if r.status_code not in (200, 202):
                    raise RuntimeError(f"{day} {site}: {r.status_code} {r.text[:300]}")
                out = r.json()
                for status in ("accepted", "duplicate", "rejected"):
                    counts[status] += int(out[status])
    # Every accepted result reaches Kafka (the relay), then the worker goes quiet.
    await reader.wait_for(lambda r: sum(t == DRUGCHECK_RESULTS.name for t, _, _ in r.records)
                          >= counts["accepted"], 600)
    deadline = time.monotonic() + 300
    last = -1
    while len(reader.records) != last and time.monotonic() < deadline:
        last = len(reader.records)
        await asyncio.sleep(5)
    return {"sites": len(sites), **counts}


def _report(reader: SignalReader) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    arrived: dict[str, float] = {}
    signals: list[tuple[dict[str, Any], float]] = []
    for topic, value, at in reader.records:
        if value == b"probe":  # the start-up probe (dead-lettered)
            continue
        if topic == DRUGCHECK_RESULTS.name:
            event = json.loads(value)
            results[event["event_id"]] = event
            arrived[event["event_id"]] = at
        elif topic == SIGNALS.name:
            signals.append((json.loads(value), at))
    seen_ids: set[str] = set()
    table: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    delays: dict[str, list[float]] = defaultdict(list)
    pipeline: list[float] = []
    first_by_pattern: dict[str, dict[str, Any]] = {}
    for signal, at in signals:
        if signal["event_id"] in seen_ids:
            continue
        seen_ids.add(signal["event_id"])
        city = signal["region_name"]
        month = signal["occurred_at"][:7]
        table[(city, month)][signal["pattern"]] += 1
        evidence = [results[e] for e in signal["evidence_event_ids"] if e in results]
        if evidence:
            first = min(datetime.fromisoformat(e["collected_at"]) for e in evidence)
            signal_time = datetime.fromisoformat(signal["occurred_at"])
            delays[signal["pattern"]].append((signal_time - first).total_seconds() / 86400)
            trigger = signal["evidence_event_ids"][-1] if signal["pattern"] == \
                "multi_site_cluster" else signal["evidence_event_ids"][0]
            if trigger in arrived:
                pipeline.append(at - arrived[trigger])
        first_by_pattern.setdefault(signal["pattern"], signal)
    return {
        "results_on_kafka": len(results),
        "signals": len(seen_ids),
        "signals_by_pattern": dict(Counter(s["pattern"] for s, _ in signals
                                           if s["event_id"] in seen_ids)),
        "per_city_month": [{"city": c, "month": m, **dict(v)}
                           for (c, m), v in sorted(table.items())],
        "delay_days_from_first_sample": {
            p: {"n": len(v), "median": round(statistics.median(v), 2),
                "p90": round(statistics.quantiles(v, n=10)[8], 2) if len(v) > 1 else v[0],
                "max": round(max(v), 2)} for p, v in sorted(delays.items())},
        "pipeline_seconds": ({"median": round(statistics.median(pipeline), 3),
                              "max": round(max(pipeline), 3)} if pipeline else {}),
    }


def _print(upload: dict[str, Any], report: dict[str, Any]) -> None:
    print(f"uploaded: {upload}")
    print(f"results on Kafka: {report['results_on_kafka']}; signals: {report['signals']} "
          f"{report['signals_by_pattern']}")
    patterns = ["unexpected_adulterant", "novel_substance", "multi_site_cluster",
                "rising_positivity"]
    short = {"unexpected_adulterant": "adult", "novel_substance": "novel",
             "multi_site_cluster": "cluster", "rising_positivity": "rising"}
    print(f"\n{'city':<36} {'month':<8} " + " ".join(f"{short[p]:>7}" for p in patterns))
    for row in report["per_city_month"]:
        print(f"{row['city'][:36]:<36} {row['month']:<8} "
              + " ".join(f"{row.get(p, 0):>7}" for p in patterns))
    print("\ndelay from first sample to signal (days, event time):")
    for p, d in report["delay_days_from_first_sample"].items():
        print(f"  {p:<22} n={d['n']:<5} median {d['median']:<6} p90 {d['p90']:<6} "
              f"max {d['max']}")
    if report["pipeline_seconds"]:
        wall = report["pipeline_seconds"]
        print(f"pipeline (result on Kafka -> signal): median {wall['median']} s, "
              f"max {wall['max']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    header, days = _days(args.quick)
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (s, _keys):
        asyncio.run(_ready(s.worker, s.bootstrap))

        async def go() -> tuple[dict[str, Any], dict[str, Any]]:
            reader = SignalReader(s.bootstrap, (DRUGCHECK_RESULTS.name, SIGNALS.name))
            await reader.start()
            try:
                upload = await _upload(s, header[0], days, reader)
                return upload, _report(reader)
            finally:
                await reader.stop()

        upload, report = asyncio.run(go())
    _print(upload, report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_backtest_bc{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"benchmark": "detection_backtest_bc", "quick": args.quick,
                               "upload": upload, **report,
                               "at": datetime.now(UTC).isoformat(timespec="seconds")},
                              indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
