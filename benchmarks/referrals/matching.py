"""Matching latency over a generated directory (target: p99 < 50 ms at 10,000 services).

    .venv/bin/python -m benchmarks.referrals.matching            # 10,000 services, 2,000 requests
    .venv/bin/python -m benchmarks.referrals.matching --quick    # 1,000 services, 200 requests
    .venv/bin/python -m benchmarks.referrals.matching --with-db  # also: load from SQLite

Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from services.referrals.geo import BC_CENTROIDS, centroid
from services.referrals.matching import (
    PAYMENT_ACCEPTS,
    SERVICE_TYPES,
    TREATMENT,
    DirectoryIndex,
    Entry,
    Hours,
    Request,
    match,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
SEATTLE_ZIPS = ("98101", "98103", "98104", "98105", "98108", "98112", "98115", "98118",
                "98122", "98125", "98133", "98144", "98168", "98199", "98002", "98402")
DAY_SETS: tuple[frozenset[str], ...] = (frozenset(), frozenset({"MO", "TU", "WE", "TH", "FR"}),
            frozenset({"MO", "TU", "WE", "TH", "FR", "SA"}), frozenset({"TU", "TH"}))
LANGS = ("es", "vi", "zh", "fr", "pa", "ko", "ru")
PAYMENTS = ("medicaid", "sliding_fee", "self_pay", "free", "private_insurance")


def _places() -> list[tuple[str, tuple[float, float], str]]:
    out = []
    for z in SEATTLE_ZIPS:
        region = f"us/wa/x/{z}"
        point = centroid(f"us/wa/king-county/{z}") or centroid(f"us/wa/pierce-county/{z}") \
            or (47.6, -122.3)
        out.append((region, point, "America/Los_Angeles"))
    for region, point in BC_CENTROIDS.items():
        out.append((region, point, "America/Vancouver"))
    return out


def generate(n: int, seed: int = 10_000) -> list[Entry]:
    rng = random.Random(seed)
    places = _places()
    types = list(SERVICE_TYPES)
    entries = []
    for i in range(n):
        _region, (lat, lon), zone = rng.choice(places)
        opens = rng.choice((0, 5, 7, 8, 9, 10, 12))
        length = rng.choice((4, 8, 10, 12, 24))
        closes = dtime(23, 59) if opens + length >= 24 else dtime(opens + length)
        hours = [Hours(rng.choice(DAY_SETS), dtime(opens), closes)]
        if rng.random() < 0.2:
            hours.append(Hours(frozenset({"SA"}), dtime(10), dtime(14)))
        entries.append(Entry(
            service_id=f"svc-{i}", service_at_location_id=f"sal-{i}", name=f"Service {i}",
            service_types=frozenset(rng.sample(types, rng.choice((1, 2, 3)))),
            point=(lat + rng.uniform(-0.05, 0.05), lon + rng.uniform(-0.05, 0.05)),
            hours=tuple(hours), time_zone=zone,
            languages=frozenset({"en", *rng.sample(LANGS, rng.choice((0, 0, 1, 2)))}),
            interpretation=rng.random() < 0.2,
            payment=frozenset(rng.sample(PAYMENTS, rng.choice((1, 2, 3)))),
            minimum_age=rng.choice((None, None, 18, 16)),
            maximum_age=rng.choice((None, None, None, 24)),
            capacity_available=rng.choice((None, None, 0.0, 1.0, 3.0, 10.0)),
            address=f"{i} Bench St", phone="206-555-0100"))
    return entries


def requests(n: int, seed: int = 7) -> list[Request]:
    rng = random.Random(seed)
    places = _places()
    out = []
    base = datetime(2026, 11, 23, tzinfo=UTC)
    for _ in range(n):
        _region, point, zone = rng.choice(places)
        wanted = frozenset(TREATMENT) if rng.random() < 0.5 else frozenset(
            {rng.choice(list(SERVICE_TYPES))})
        out.append(Request(
            service_types=wanted, now=base + timedelta(minutes=rng.randrange(7 * 24 * 60)),
            time_zone=zone, origin=point, language=rng.choice(("en", "en", "en", "es", "vi")),
            payment=rng.choice((None, *PAYMENT_ACCEPTS)), age=rng.choice((None, 17, 30, 55)),
            within_hours=2, max_distance_km=40))
    return out


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": ordered[-1] * 1000,
            "mean_ms": statistics.fmean(ordered) * 1000}


def bench_matching(services: int, n_requests: int) -> dict[str, Any]:
    entries = DirectoryIndex(generate(services))  # what the worker matches against
    reqs = requests(n_requests)
    for r in reqs[:20]:  # warm up
        match(entries, r)
    samples, found = [], 0
    for r in reqs:
        started = time.perf_counter()
        result = match(entries, r)
        samples.append(time.perf_counter() - started)
        found += bool(result)
    return {"services": services, "requests": n_requests, **_percentiles(samples),
            "requests_with_a_match": found}


def bench_db(services: int) -> dict[str, Any]:
    """Write the generated directory as HSDS, import it into SQLite, time the directory load
    (cold, and cached as the worker does it)."""
    from migrations import upgrade
    from services.referrals import service
    from services.referrals.hsds import import_path, write_package
    from shared.db import session_scope

    entries = generate(services)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in (
        "organization", "service", "location", "service_at_location", "schedule", "language",
        "taxonomy_term", "attribute", "service_capacity")}
    for code in {c for codes in SERVICE_TYPES.values() for c in codes[:1]} | {"medicaid",
                                                                               "sliding_fee",
                                                                               "self_pay",
                                                                               "free"}:
        rows["taxonomy_term"].append({"id": f"tt-{code}", "code": code, "name": code})
    for e in entries:
        i = e.service_id.removeprefix("svc-")
        rows["organization"].append({"id": f"org-{i}", "name": f"Org {i}"})
        rows["service"].append({"id": e.service_id, "organization_id": f"org-{i}",
                                "name": e.name, "status": "active"})
        assert e.point is not None
        rows["location"].append({"id": f"loc-{i}", "latitude": round(e.point[0], 5),
                                 "longitude": round(e.point[1], 5)})
        rows["service_at_location"].append({"id": e.service_at_location_id,
                                            "service_id": e.service_id, "location_id": f"loc-{i}"})
        for j, h in enumerate(e.hours):
            rows["schedule"].append({"id": f"sch-{i}-{j}", "service_id": e.service_id,
                                     "byday": ",".join(sorted(h.days)),
                                     "opens_at": h.opens.strftime("%H:%M"),
                                     "closes_at": h.closes.strftime("%H:%M")})
        for code in e.languages:
            rows["language"].append({"id": f"lang-{i}-{code}", "service_id": e.service_id,
                                     "code": code})
        for j, t in enumerate(sorted(e.service_types) + sorted(
                p for p in e.payment if p != "private_insurance")):
            rows["attribute"].append({"id": f"at-{i}-{j}", "link_id": e.service_id,
                                      "link_entity": "service", "taxonomy_term_id": f"tt-{t}"})
        if e.capacity_available is not None:
            rows["service_capacity"].append({"id": f"cap-{i}", "service_id": e.service_id,
                                             "available": e.capacity_available})
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        package = write_package(rows, Path(tmp) / "package")
        started = time.perf_counter()
        with session_scope(url) as session:
            report = import_path(session, package)
        import_s = time.perf_counter() - started
        assert not report.rejected, report.summary()[:500]
        loads = []
        for _ in range(3):
            started = time.perf_counter()
            with session_scope(url) as session:
                service.load_entries(session)
            loads.append(time.perf_counter() - started)
        cached = []
        for _ in range(20):
            started = time.perf_counter()
            with session_scope(url) as session:
                service.cached_entries(session, url)
            cached.append(time.perf_counter() - started)
    return {"services": services, "import_seconds": round(import_s, 2),
            "load_entries_ms": round(min(loads) * 1000, 1),
            "cached_entries_p99_ms": round(_percentiles(cached[1:])["p99_ms"], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 services, 200 requests")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--with-db", action="store_true",
                        help="also import the directory into SQLite and time loading it")
    args = parser.parse_args(argv)
    services, n = (1_000, 200) if args.quick else (args.services, args.requests)
    result: dict[str, Any] = {
        "benchmark": "referrals.matching", "python": platform.python_version(),
        "machine": platform.machine(), "at": datetime.now(UTC).isoformat(),
        "matching": bench_matching(services, n), "target_p99_ms": 50}
    m = result["matching"]
    print(f"matching over {services:,} services, {n:,} requests: p50 {m['p50_ms']:.2f} ms, "
          f"p95 {m['p95_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms, max {m['max_ms']:.2f} ms "
          f"({m['requests_with_a_match']} requests found a match)")
    result["pass"] = m["p99_ms"] < 50
    print(f"target p99 < 50 ms: {'PASS' if result['pass'] else 'FAIL'}")
    if args.with_db:
        result["db"] = bench_db(services)
        d = result["db"]
        print(f"SQLite: import {d['import_seconds']} s, load_entries {d['load_entries_ms']} ms, "
              f"cached directory p99 {d['cached_entries_p99_ms']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"referrals_matching{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
