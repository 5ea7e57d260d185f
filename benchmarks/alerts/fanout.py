"""Alerts fan-out benchmark: one alert to many subscribers through the real alerts worker
(Faust on Tansu, SQLite or PostgreSQL, the real twilio SDK) against the fake Twilio server
in its own process.

    .venv/bin/python -m benchmarks.alerts.fanout               # 100,000 subscribers, no limit
    .venv/bin/python -m benchmarks.alerts.fanout --rate 100    # achieved rate vs the limit
    .venv/bin/python -m benchmarks.alerts.fanout --quick       # 3,000 subscribers

Prints the time from the signal until every message was handed over (accepted by the fake
Twilio), messages/s over the sending phase (first to last message), and each process's
peak RSS (VmHWM); saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shared.settings import Settings
from tests.alerts.harness import SID, TOKEN, Stack, publish_signal, seed_subscribers, tansu
from tests.conftest import REPO_ROOT, free_port

RESULTS = REPO_ROOT / "benchmarks" / "results"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def accepted(url: str) -> int:
    return int(httpx.get(f"{url}/_fake/stats", timeout=10).json().get("accepted", 0))


def run(count: int, rate: float, concurrency: int, db_url: str | None,
        timeout: float, workers: int = 1) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-alerts-"))
    print(f"logs in {tmp}", flush=True)
    port = free_port()
    fake_log = (tmp / "fake-twilio.log").open("wb")
    fake = subprocess.Popen([sys.executable, "-m", "shared.fakes.twilio_server", "--port",
                             str(port), "--account-sid", SID, "--auth-token", TOKEN,
                             "--log-level", "warning"], cwd=REPO_ROOT, stdout=fake_log,
                            stderr=subprocess.STDOUT)
    fake_url = f"http://127.0.0.1:{port}"
    try:
        with tansu() as bootstrap:
            stack = Stack(tmp, bootstrap, fake_url, rate=rate, extra_env={
                "LOOKOUT_SMS_SEND_CONCURRENCY": str(concurrency),
                "LOOKOUT_PUBLIC_ALERTS_URL": "",  # no status callbacks: sending only
                "LOOKOUT_SMS_STALE_SENDING_SECONDS": "30",
                **({"LOOKOUT_DATABASE_URL": db_url} if db_url else {})})
            stack.migrate() if not db_url else None
            target = db_url or stack.db_url
            if db_url:
                from shared.migrate import upgrade

                upgrade(db_url)
            t0 = time.monotonic()
            seed_subscribers(target, Settings().secret_key, count)
            print(f"seeded {count} subscribers in {time.monotonic() - t0:.1f}s", flush=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    accepted(fake_url)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            procs = [stack.start("alerts-worker", label=f"alerts-worker-{i + 1}")
                     for i in range(workers)]
            time.sleep(8 + 6 * (workers - 1))  # let the workers join their groups
            started = time.monotonic()
            asyncio.run(publish_signal(bootstrap))
            first_at = None
            last_n, samples = 0, []
            end = started + timeout
            while time.monotonic() < end:
                n = accepted(fake_url)
                now = time.monotonic()
                if n and first_at is None:
                    first_at = now
                samples.append((round(now - started, 2), n))
                if n >= count:
                    break
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker died; see the logs in {tmp}")
                last_n = n
                time.sleep(0.25)
            done_at = time.monotonic()
            time.sleep(2)  # a late duplicate would show now
            handed = accepted(fake_url)
            recipients = len({m["to"] for m in httpx.get(f"{fake_url}/_fake/messages",
                                                         timeout=120).json()})
            rss = {f"alerts-worker-{i + 1}": peak_rss_mb(p.pid) for i, p in enumerate(procs)}
            rss["fake-twilio"] = peak_rss_mb(fake.pid)
            stack.stop_all()
    finally:
        fake.terminate()
        fake.wait(10)
        fake_log.close()
    sending = done_at - (first_at or started)
    result: dict[str, object] = {
        "subscribers": count, "rate_limit": rate, "concurrency": concurrency,
        "workers": workers,
        "database": "postgresql" if db_url else "sqlite", "handed_over": handed,
        "distinct_recipients": recipients,
        "seconds_signal_to_all": round(done_at - started, 2),
        "seconds_first_to_last": round(sending, 2),
        "messages_per_second": round(handed / sending, 1) if sending > 0 else None,
        "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "samples": samples[:: max(1, len(samples) // 40)],
    }
    if rate > 0 and sending > 0:
        # Steady state: the rate between 10 % and 90 % of the messages handed over (the
        # bucket starts full, a burst of one second's worth; the last batches trail off).
        lo = next(((t, n) for t, n in samples if n >= count * 0.1), None)
        hi = next(((t, n) for t, n in samples if n >= count * 0.9), None)
        if lo and hi and hi[0] > lo[0]:
            achieved = (hi[1] - lo[1]) / (hi[0] - lo[0])
            result["steady_messages_per_second"] = round(achieved, 1)
            result["rate_error_pct"] = round(abs(achieved - rate) / rate * 100, 2)
    del last_n
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=0, help="messages/s limit; 0 = none")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--workers", type=int, default=1,
                        help="alerts worker processes (a rate limit is per process)")
    parser.add_argument("--quick", action="store_true", help="3,000 subscribers")
    args = parser.parse_args(argv)
    count = 3000 if args.quick else args.subscribers
    result = run(count, args.rate, args.concurrency, args.database_url, args.timeout,
                 args.workers)
    for key, value in result.items():
        if key != "samples":
            print(f"{key:>24}: {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (f"alerts_fanout_{count}_rate{int(args.rate)}_w{args.workers}"
            f"{'_quick' if args.quick else ''}.json")
    (RESULTS / name).write_text(json.dumps(result, indent=2))
    print(f"saved {RESULTS / name}")
    ok = result["handed_over"] == count == result["distinct_recipients"]
    if args.rate > 0:
        ok = ok and float(result.get("rate_error_pct", 100)) <= 5  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
