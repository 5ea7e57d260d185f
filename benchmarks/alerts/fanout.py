"""Alerts fan-out benchmark: one alert to many subscribers through the real alerts worker
(Faust on Tansu, SQLite or PostgreSQL, the real twilio SDK) against the fake Twilio server
in its own process.

    .venv/bin/python -m benchmarks.alerts.fanout               # 100,000 subscribers, no limit
    .venv/bin/python -m benchmarks.alerts.fanout --rate 100    # achieved rate vs the limit
    .venv/bin/python -m benchmarks.alerts.fanout --quick       # 3,000 subscribers

    .venv/bin/python -m benchmarks.alerts.fanout --callbacks   # + the API taking callbacks
    .venv/bin/python -m benchmarks.alerts.fanout --quick --profile /tmp/prof  # py-spy, raw

Prints the time from the signal until every message was handed over (accepted by the fake
Twilio), messages/s over the sending phase (first to last message), each process's peak RSS
(VmHWM) and CPU time per message (user + system, from /proc: meaningful on a busy machine
where wall-clock figures are not); with --callbacks the alerts API runs and the fake posts
signed status callbacks (sent, delivered) to it: callbacks answered, deliveries that reached
`delivered` and the lag after the last hand-over. Saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shared.broker import free_port
from shared.settings import REPO_ROOT, Settings
from testing.alerts_stack import SID, TOKEN, Stack, publish_signal, seed_subscribers, tansu

RESULTS = REPO_ROOT / "benchmarks" / "results"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def accepted(url: str) -> int:
    return int(fake_stats(url).get("accepted", 0))


def fake_stats(url: str) -> dict[str, int]:
    return dict(httpx.get(f"{url}/_fake/stats", timeout=10).json())


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def children() -> dict[int, str]:
    """This process's children: pid -> command line (the broker is one)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                pid = int(stat.parent.name)
                out[pid] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return out


def delivered(db_path: Path) -> int:
    """Deliveries a status callback moved to `delivered` (read-only; SQLite in WAL)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute(
            "select count(*) from alerts_deliveries where status = 'delivered'").fetchone()[0])


def status_outcomes(port: int) -> dict[str, float]:
    """The API's callback outcomes (applied, stale, early) from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("lookout_alerts_sms_status_outcomes_total{"):
            label, value = line.split("} ")
            out[label.split('"')[1]] = float(value)
    return out


def start_profilers(pids: dict[str, int], out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy (raw folded stacks, only samples holding the GIL) on each Python process."""
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return [subprocess.Popen([str(spy), "record", "--gil", "-r", "100", "-f", "raw", "-p",
                              str(pid), "-o", str(out / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def run(count: int, rate: float, concurrency: int, db_url: str | None,
        timeout: float, workers: int = 1, callbacks: bool = False,
        profile: Path | None = None) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="lookout-bench-alerts-"))
    print(f"logs in {tmp}", flush=True)
    port = free_port()
    fake_log = (tmp / "fake-twilio.log").open("wb")
    fake = subprocess.Popen([sys.executable, "-m", "testing.twilio_server", "--port",
                             str(port), "--account-sid", SID, "--auth-token", TOKEN,
                             "--log-level", "warning"], cwd=REPO_ROOT, stdout=fake_log,
                            stderr=subprocess.STDOUT)
    fake_url = f"http://127.0.0.1:{port}"
    try:
        with tansu() as bootstrap:
            stack = Stack(tmp, bootstrap, fake_url, rate=rate, extra_env={
                "LOOKOUT_SMS_SEND_CONCURRENCY": str(concurrency),
                **({} if callbacks else {"LOOKOUT_PUBLIC_ALERTS_URL": ""}),
                "LOOKOUT_SMS_STALE_SENDING_SECONDS": "30",
                **({"LOOKOUT_DATABASE_URL": db_url} if db_url else {})})
            stack.migrate() if not db_url else None
            target = db_url or stack.db_url
            if db_url:
                from migrations import upgrade

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
            named: dict[str, subprocess.Popen[bytes]] = {"fake-twilio": fake}
            if callbacks:
                named["alerts-api"] = stack.start("alerts")
                stack.wait_api()
            procs = [stack.start("alerts-worker", label=f"alerts-worker-{i + 1}")
                     for i in range(workers)]
            named.update({f"alerts-worker-{i + 1}": p for i, p in enumerate(procs)})
            time.sleep(8 + 6 * (workers - 1))  # let the workers join their groups
            pids = {name: p.pid for name, p in named.items()}
            pids.update({f"tansu-{pid}": pid for pid, cmd in children().items()
                         if "tansu" in cmd})
            spies = start_profilers({k: v for k, v in pids.items() if "tansu" not in k},
                                    profile) if profile else []
            cpu0 = {name: cpu_times(pid) for name, pid in pids.items()}
            load0 = os.getloadavg()
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
            times = {name: cpu_times(pid) for name, pid in pids.items()}
            cpu = {name: sum(times[name]) - sum(cpu0[name]) for name in pids}
            system = {name: times[name][1] - cpu0[name][1] for name in pids}
            load1 = os.getloadavg()
            applied_at, applied = None, 0
            if callbacks:  # every delivery should reach `delivered` through its callbacks
                end = done_at + 120
                while time.monotonic() < end:
                    applied = delivered(tmp / "alerts.db") if not db_url else 0
                    if applied >= count or db_url:
                        break
                    time.sleep(0.5)
                applied_at = time.monotonic()
            outcomes = status_outcomes(stack.alerts_port) if callbacks else {}
            time.sleep(2)  # a late duplicate would show now
            stats = fake_stats(fake_url)
            handed = int(stats.get("accepted", 0))
            for spy in spies:
                spy.send_signal(2)  # SIGINT: py-spy writes its file
            for spy in spies:
                spy.wait(30)
            recipients = len({m["to"] for m in httpx.get(f"{fake_url}/_fake/messages",
                                                         timeout=120).json()})
            rss = {f"alerts-worker-{i + 1}": peak_rss_mb(p.pid) for i, p in enumerate(procs)}
            rss["fake-twilio"] = peak_rss_mb(fake.pid)
            if callbacks:
                rss["alerts-api"] = peak_rss_mb(named["alerts-api"].pid)
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
        "cpu_ms_per_message": {k: round(v * 1000 / max(handed, 1), 3) for k, v in cpu.items()},
        "cpu_ms_per_message_total": round(sum(cpu.values()) * 1000 / max(handed, 1), 3),
        # the kernel's part of the above (sockets, file reads and writes)
        "system_cpu_ms_per_message": {k: round(v * 1000 / max(handed, 1), 3)
                                      for k, v in system.items()},
        "load_average_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "samples": samples[:: max(1, len(samples) // 40)],
    }
    if callbacks:
        result["callbacks"] = {
            "posted": stats.get("callback.ok", 0), "failed": stats.get("callback.error", 0),
            "deliveries_delivered": applied,
            "api_outcomes": outcomes,
            "seconds_after_last_handover": round((applied_at or done_at) - done_at, 2),
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
    parser.add_argument("--callbacks", action="store_true",
                        help="run the alerts API and let the fake post status callbacks")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy each Python process into this folder (raw stacks)")
    args = parser.parse_args(argv)
    count = 3000 if args.quick else args.subscribers
    result = run(count, args.rate, args.concurrency, args.database_url, args.timeout,
                 args.workers, args.callbacks, args.profile)
    for key, value in result.items():
        if key != "samples":
            print(f"{key:>24}: {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = (f"alerts_fanout_{count}_rate{int(args.rate)}_w{args.workers}"
            f"{'_callbacks' if args.callbacks else ''}{'_quick' if args.quick else ''}.json")
    (RESULTS / name).write_text(json.dumps(result, indent=2))
    print(f"saved {RESULTS / name}")
    ok = result["handed_over"] == count == result["distinct_recipients"]
    if args.callbacks and not args.database_url:
        ok = ok and result["callbacks"]["deliveries_delivered"] == count  # type: ignore[index]
    if args.rate > 0:
        ok = ok and float(result.get("rate_error_pct", 100)) <= 5  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
