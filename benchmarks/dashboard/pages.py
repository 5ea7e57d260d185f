"""Page-render latency of the dashboard with a year of data (target: p99 < 150 ms per page).

The read model holds the Drug Checking BC export's last year and 11,000 synthetic overdose
reports over Florida's 67 counties (testing/dashboard_seed.py, through the dashboard's own
consumer), plus a story of signals, alerts and referrals. A signed-in official's browser is
played by an HTTP client on the app in process (the session cookie checked on every
request, as in production); each page is asked `--requests` times after a warm-up. The
process is tuned as `lookout serve dashboard` tunes its own (services/tuning.py: the imported
app frozen out of the garbage collector's reach, a larger young generation).

    .venv/bin/python -m benchmarks.dashboard.pages            # a year, 100 requests a page
    .venv/bin/python -m benchmarks.dashboard.pages --quick    # 28 days, 20 requests a page
    .venv/bin/python -m benchmarks.dashboard.pages --database-url postgresql+psycopg://...

Prints the figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from migrations import upgrade
from services.dashboard import accounts
from services.dashboard.api import app
from services.tuning import tune_dashboard_http
from shared.db import session_scope
from shared.settings import Settings, get_settings
from testing import dashboard_seed

RESULTS = Path(__file__).resolve().parents[1] / "results"
TARGET_P99_MS = 150.0


def _pages(s: dashboard_seed.Seeded) -> list[tuple[str, str]]:
    return [
        ("now", "/"),
        ("review queue", "/review"),
        ("workbench (draft)", f"/alerts/{s.draft_id}"),
        ("workbench (sent)", f"/alerts/{s.sent_id}"),
        ("trends (all, 28 d)", "/trends"),
        ("trends (county, 90 d)", f"/trends?region={s.region_id.rsplit('/', 1)[0]}&days=90"),
        ("trends (state, 365 d, week)", "/trends?region=us/fl&days=365&bucket=week"),
        ("drug supply (90 d)", "/supply"),
        ("map (28 d)", "/map"),
        ("referrals", "/referrals"),
        ("performance", "/performance"),
    ]


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="28 days of data, 20 requests")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    args = parser.parse_args(argv)
    tune_dashboard_http()  # as `lookout serve dashboard` does once the app is imported
    days, reports, n = (28, 1_000, 20) if args.quick else (365, 11_000, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'lookout.db'}"
        upgrade(url)
        settings = Settings(env="test", database_url=url, var_dir=Path(tmp) / "var",
                            dashboard_login_rate_per_minute=0)
        started = time.monotonic()
        seeded = dashboard_seed.seed(url, datetime.now(UTC), bc_days=days, reports=reports,
                           report_days=days)
        load_s = time.monotonic() - started
        dashboard_seed.forget_parsed_export()  # the loader's, not the page process's
        with session_scope(url) as session:
            password = accounts.create(session, settings, "bench", "reviewer", "*",
                                       with_password=True).password
        app.dependency_overrides[get_settings] = lambda: settings
        client = TestClient(app)
        login = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
        signed = client.post("/login", data={"name": "bench", "password": password or "",
                                             "csrf_token": token.group(1) if token else ""},
                             follow_redirects=False)
        assert signed.status_code == 303, signed.text
        print(f"read model: {seeded.counts['results']:,} BC results and "
              f"{seeded.counts['reports']:,} overdose reports over {days} days, loaded in "
              f"{load_s:.0f} s; {n} requests a page; load average {_load()}")
        pages: dict[str, Any] = {}
        for name, path in _pages(seeded):
            for _ in range(3):  # warm-up: template compilation, caches
                assert client.get(path).status_code == 200, path
            times, size = [], 0
            for _ in range(n):
                t0 = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, (path, response.status_code)
                size = len(response.content)
            pages[name] = {"path": path, "p50_ms": round(statistics.median(times), 1),
                           "p99_ms": round(_percentile(times, 0.99), 1),
                           "max_ms": round(max(times), 1), "bytes": size}
            f = pages[name]
            print(f"{name:30s} p50 {f['p50_ms']:7.1f} ms  p99 {f['p99_ms']:7.1f} ms  "
                  f"max {f['max_ms']:7.1f} ms  {size / 1024:6.0f} KiB")
        app.dependency_overrides.clear()
    worst = max(p["p99_ms"] for p in pages.values())
    result = {"benchmark": "dashboard.pages", "python": platform.python_version(),
              "machine": platform.machine(), "at": datetime.now(UTC).isoformat(),
              "database": "postgresql" if url.startswith("postgresql") else "sqlite",
              "days": days, "results": seeded.counts["results"], "reports": reports,
              "requests_per_page": n, "load_average_after": _load(),
              "load_seconds": round(load_s, 1), "pages": pages,
              "target_p99_ms": TARGET_P99_MS, "worst_p99_ms": worst,
              "pass": worst < TARGET_P99_MS}
    print(f"worst p99 {worst:.1f} ms; target p99 < {TARGET_P99_MS:.0f} ms: "
          f"{'PASS' if result['pass'] else 'FAIL'}; load average {_load()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dashboard_pages{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
