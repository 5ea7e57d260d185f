"""Latency from ingest acceptance to the signal on signals.v1 at 200 events/s (targets:
p50 < 300 ms, p99 < 1 s).

    .venv/bin/python -m benchmarks.detection.latency                # worst case, 30 s per phase
    .venv/bin/python -m benchmarks.detection.latency --quick        # worst case, 5 s
    .venv/bin/python -m benchmarks.detection.latency --mix bc       # the BC export, 30 s

Two mixes. `--mix worst` (the default) is described below: every result raises three
signals, a worst case for the detection worker. `--mix bc` POSTs the Drug Checking BC
export 2018-2020 (the rows as ingest's CSV mapping turns them into results, one JSON
`POST /v1/drug-checks` each, with the API key of a Lookout site per BC collection site) in
their real order, oldest first, from the first row; the dates are shifted by whole days so
that the last row sent falls yesterday (the spread of the real data kept, compressed in
wall clock: 30 s at 200/s covers about the first year of the export). Most of these
results raise no signal; each signal raised is timed from the 202 of the event that
triggered it (of its evidence, the one accepted last), per hop as in the worst case. No
overdose reports are mixed in (the export has none; the throughput benchmark covers them),
and there is no Kafka phase in this mix.

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
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import zipcodes
from sqlalchemy import select

from benchmarks.detection.backtest_bc import DATA, site_keys
from benchmarks.detection.latency_clients import BareHttp, SignalReader
from benchmarks.detection.stack import Stack, stack
from benchmarks.detection.throughput import _ready
from shared.db import session_scope
from shared.events import DetectedSubstanceV1, DrugCheckResultV1
from shared.regions import by_postal_code
from shared.topics import DRUGCHECK_RESULTS
from testing.detection_worker import Event, produce
from testing.processes import cpu_seconds

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


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each named process (and its children), and of
    this one."""
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine = os.times()
    out["benchmark"] = mine.user + mine.system
    return out


def _outbox_times(url: str) -> dict[str, tuple[float, float | None]]:
    """event id -> (outbox row created, published_at) as wall-clock seconds. The row is
    created (prepared) before its group's commit; published_at is set after the broker's ack."""
    from services.ingest.models import OutboxMessage

    with session_scope(url) as session:
        rows = session.execute(select(OutboxMessage.payload, OutboxMessage.created_at,
                                      OutboxMessage.published_at)
                               .where(OutboxMessage.topic == DRUGCHECK_RESULTS.name)).all()
    return {json.loads(payload)["event_id"]: (created.timestamp(),
                                              published.timestamp() if published else None)
            for payload, created, published in rows}


def _hops(accepted: dict[str, float], first: dict[str, tuple[float, float]],
          relayed: dict[str, float], outbox: dict[str, tuple[float, float | None]],
          window: float = 5.0) -> dict[str, Any]:
    """Per-hop percentiles (wall clock, one machine): where the time between the 202 and
    the signal goes, and the total per window of the run (does it grow?)."""
    hops: dict[str, list[float]] = {name: [] for name in (
        "row_created_to_202", "row_created_to_relay_send", "relay_send_to_marked",
        "relay_send_to_signal_send", "signal_send_to_read", "row_created_to_signal_send")}
    by_window: dict[int, list[tuple[float, float]]] = {}
    start = min(accepted.values(), default=0.0)
    for event_id, at in accepted.items():
        created, published = outbox.get(event_id, (None, None))
        sent = relayed.get(event_id)
        signal = first.get(event_id)
        if signal is not None:
            hops["signal_send_to_read"].append(signal[0] - signal[1])
        if created is None:
            continue
        hops["row_created_to_202"].append(at - created)
        if sent is None:
            continue
        hops["row_created_to_relay_send"].append(sent - created)
        if published is not None:
            hops["relay_send_to_marked"].append(published - sent)
        if signal is not None:
            hops["relay_send_to_signal_send"].append(signal[1] - sent)
            hops["row_created_to_signal_send"].append(signal[1] - created)
            by_window.setdefault(int((at - start) // window), []).append(
                (signal[0] - at, sent - created))
    return {
        **{name: _percentiles(values) for name, values in hops.items()},
        "relay_batches": len({p for _c, p in outbox.values() if p is not None}),
        "by_window": [{"from_s": k * window, "events": len(v),
                       "total": _percentiles([t for t, _r in v]),
                       "row_created_to_relay_send": _percentiles([r for _t, r in v])}
                      for k, v in sorted(by_window.items())],
    }


def _worst_requests(http: BareHttp, zips: list[str], api_key: str) -> list[bytes]:
    """Fentanyl in a sample sold as cocaine, each in a ZIP code of its own (a new region:
    three signals each)."""
    now = datetime.now(UTC) - timedelta(hours=1)
    headers = {"Authorization": f"Bearer {api_key}"}
    return [http.request("/v1/drug-checks", json.dumps({
        "sample_id": f"lat-{i}", "collected_at": now.isoformat(),
        "location": {"postal_code": code}, "sold_as": "cocaine", "methods": ["ftir"],
        "substances": [{"name": "Cocaine HCl"}, {"name": "Fentanyl HCl"}]}).encode(), headers)
        for i, code in enumerate(zips)]


def _bc_bodies(n: int) -> list[Any]:
    """The first `n` results of the BC export in their real order (oldest first), as
    ingest's CSV mapping makes them, dates shifted by whole days so the last falls
    yesterday."""
    from services.ingest.csv_import import parse_csv

    _fmt, rows = parse_csv(DATA.read_text(encoding="utf-8"))
    bodies = [row.body for row in rows if row.body is not None]
    bodies.reverse()  # the file is newest first
    bodies.sort(key=lambda b: b.collected_at)
    bodies = bodies[:n]
    if len(bodies) < n:
        raise ValueError(f"only {len(bodies)} BC results for {n} events")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    shift = timedelta(days=(yesterday - bodies[-1].collected_at.date()).days)
    return [b.model_copy(update={"collected_at": b.collected_at + shift}) for b in bodies]


async def _bc_requests(s: Stack, http: BareHttp, bodies: list[Any]) -> list[bytes]:
    sites = sorted({b.collection_site or "" for b in bodies})
    async with httpx.AsyncClient(base_url=s.ingest_url, timeout=60) as client:
        keys = await site_keys(client, sites)
    return [http.request("/v1/drug-checks", b.model_dump_json(exclude_none=True).encode(),
                         {"Authorization": f"Bearer {keys[b.collection_site or '']}"})
            for b in bodies]


def _triggered(accepted: dict[str, float], signals: list[dict[str, Any]]
               ) -> tuple[list[float], dict[str, tuple[float, float]], int]:
    """Per signal, the time from the 202 of the event that triggered it (of its evidence,
    the one accepted last: the worker could not raise it earlier) to when it was read; the
    first signal per triggering event (read, Kafka ts), for the hops; and how many signals
    had no accepted evidence."""
    latencies: list[float] = []
    first: dict[str, tuple[float, float]] = {}
    orphans = 0
    for signal in signals:
        evidence = [e for e in signal["evidence"] if e in accepted]
        if not evidence:
            orphans += 1
            continue
        trigger = max(evidence, key=lambda e: accepted[e])
        latencies.append(signal["read"] - accepted[trigger])
        if trigger not in first or signal["read"] < first[trigger][0]:
            first[trigger] = (signal["read"], signal["sent"])
    return latencies, first, orphans


async def _ingest_phase(s: Stack, mix: str, n: int, zips: list[str], rate: float
                        ) -> dict[str, Any]:
    reader = SignalReader(s.bootstrap)
    await asyncio.to_thread(reader.start)
    accepted: dict[str, float] = {}  # event id -> when its 202 was read (wall clock)
    failures = 0
    failed: list[str] = []
    http = BareHttp(s.ingest_url)
    if mix == "bc":
        requests = await _bc_requests(s, http, await asyncio.to_thread(_bc_bodies, n))
    else:
        requests = _worst_requests(http, zips, s.api_key)

    async def post(request: bytes) -> None:
        nonlocal failures
        try:
            status, body = await http.send(request)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            failures += 1
            failed.append(repr(exc))
            return
        at = time.time()
        if status != 202:
            failures += 1
            failed.append(f"{status} {body[:200]!r}")
            return
        accepted[str(json.loads(body)["event_id"])] = at

    handled_before = s.worker.handled("contamination")
    cpu_before = _cpu(s.pids)
    started = time.monotonic()
    tasks = []
    late = 0.0
    for i, request in enumerate(requests):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        tasks.append(asyncio.create_task(post(request)))
    sent = time.monotonic() - started
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    http.close()
    if mix == "bc":
        # Most results raise no signal: wait until the worker has handled every accepted
        # result, then read what is still on its way.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if s.worker.handled("contamination") >= handled_before + len(accepted):
                break
            await asyncio.sleep(0.05)
        drained_after = time.monotonic() - started
        first, relayed, signals = await reader.finish(set(), 60, drain=2.0)
        latencies, first, orphans = _triggered(accepted, signals)
    else:
        first, relayed, signals = await reader.finish(set(accepted), 60)
        latencies = [first[e][0] - t for e, t in accepted.items() if e in first]
        orphans = 0
        drained_after = time.monotonic() - started
    cpu_ms = {k: round((v - cpu_before[k]) * 1000 / max(len(accepted), 1), 2)
              for k, v in _cpu(s.pids).items()}
    outbox = await asyncio.to_thread(_outbox_times, s.database_url)
    hops = _hops(accepted, first, relayed, outbox)
    # Where an accepted event without a signal got to (in the outbox? published? on Kafka?).
    missing = ([{"event_id": e, "outbox": outbox.get(e), "on_kafka": e in relayed}
                for e in accepted if e not in first] if mix == "worst" else [])
    on_kafka = sum(e in relayed for e in accepted)
    return {"mix": mix, "events": len(requests), "accepted": len(accepted),
            "http_failures": failures, "http_failure_examples": failed[:5],
            "offered_per_s": round(len(requests) / sent, 1) if sent else None,
            "accepted_per_s": round(len(accepted) / elapsed, 1),
            "on_kafka": on_kafka, "done_after_s": round(drained_after, 1),
            "done_per_s": round(len(accepted) / drained_after, 1),
            "sender_max_late_ms": round(late * 1000, 1),
            "signals": len(signals),
            "signals_by_pattern": dict(Counter(str(x["pattern"]) for x in signals)),
            "signals_without_accepted_evidence": orphans,
            "events_that_signalled": len(first), "signalled": len(latencies),
            "cpu_ms_per_event": cpu_ms, "unsignalled": missing[:20],
            **_percentiles(latencies), "hops": hops}


async def _kafka_phase(s: Stack, zips: list[str], rate: float) -> dict[str, Any]:
    reader = SignalReader(s.bootstrap)
    await asyncio.to_thread(reader.start)
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

    def on_sent(event: Event, _at: float) -> None:
        acked[str(event.event_id)] = time.time()

    cpu_before = _cpu(s.pids)["worker"]
    await produce(s.bootstrap, events, rate=rate, on_sent=on_sent)
    first, relayed, _signals = await reader.finish(set(acked), 60)
    worker_cpu = (_cpu(s.pids)["worker"] - cpu_before) * 1000 / max(len(acked), 1)
    latencies = [first[e][0] - t for e, t in acked.items() if e in first]
    sent_to_signal = [first[e][1] - relayed[e] for e in acked if e in first and e in relayed]
    return {"events": len(events), "signalled": len(latencies), **_percentiles(latencies),
            "send_to_signal_send": _percentiles(sent_to_signal),
            "worker_cpu_ms_per_event": round(worker_cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--mix", choices=("worst", "bc"), default="worst",
                        help="worst: every result a new region, three signals each (the "
                        "default); bc: the Drug Checking BC export in its real order")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    n = int(args.rate * seconds)
    zips = _zips(2 * n) if args.mix == "worst" else []
    kafka: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (s, _keys):
        asyncio.run(_ready(s.worker, s.bootstrap))
        load_before = os.getloadavg()
        ingest = asyncio.run(_ingest_phase(s, args.mix, n, zips[:n], args.rate))
        if args.mix == "worst":
            kafka = asyncio.run(_kafka_phase(s, zips[n:], args.rate))
        load_after = os.getloadavg()
    figures = {
        "benchmark": "detection_latency", "mix": args.mix, "quick": args.quick,
        "rate_per_s": args.rate, "seconds": seconds, "ingest_to_signal": ingest,
        "kafka_to_signal": kafka, "targets": {"p50_ms": 300, "p99_ms": 1000},
        "met": bool(ingest.get("p50_ms", 1e9) < 300 and ingest.get("p99_ms", 1e9) < 1000
                    and (args.mix != "worst" or ingest["signalled"] == ingest["events"])),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average": load_after},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"mix {args.mix}: {ingest['events']} events offered at {ingest['offered_per_s']}/s "
          f"(target {args.rate}/s), {ingest['accepted']} accepted ({ingest['accepted_per_s']}/s"
          f", {ingest['http_failures']} failed), all handled after {ingest['done_after_s']} s "
          f"({ingest['done_per_s']}/s)")
    print(f"signals raised: {ingest['signals']} {ingest['signals_by_pattern']}, by "
          f"{ingest['events_that_signalled']} of the events")
    phases = [("ingest -> signal", ingest)] + ([("kafka  -> signal", kafka)] if kafka else [])
    for name, f in phases:
        print(f"{name}: {f['signalled']} signal latencies; p50 {f.get('p50_ms')} ms, "
              f"p95 {f.get('p95_ms')} ms, p99 {f.get('p99_ms')} ms, max {f.get('max_ms')} ms")
    if kafka:
        print(f"kafka phase: worker CPU {kafka['worker_cpu_ms_per_event']} ms per event")
    print("ingest -> signal by hop (wall clock; p50 / p99 / max ms):")
    for name, f in ingest["hops"].items():
        if isinstance(f, dict) and f:
            print(f"  {name:28s} {f['p50_ms']:8.1f} {f['p99_ms']:8.1f} {f['max_ms']:8.1f}")
    print(f"  relay batches: {ingest['hops']['relay_batches']}")
    for w in ingest["hops"]["by_window"]:
        relay = w["row_created_to_relay_send"]
        print(f"  from {w['from_s']:4.0f} s: total p50 {w['total'].get('p50_ms')} "
              f"p99 {w['total'].get('p99_ms')}; row created -> relay send p50 "
              f"{relay.get('p50_ms')} p99 {relay.get('p99_ms')}")
    print("  CPU ms per event: " + ", ".join(f"{k} {v}" for k, v in
                                             ingest["cpu_ms_per_event"].items()))
    print(f"  sender at most {ingest['sender_max_late_ms']} ms behind its schedule")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"targets p50 < 300 ms, p99 < 1000 ms: {'met' if figures['met'] else 'missed'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("_bc" if args.mix == "bc" else "") + ("_quick" if args.quick else "")
    out = RESULTS / f"detection_latency{suffix}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
