"""Run every benchmark one after the other (`make bench`; `--quick` for a short pass).

Each benchmark prints its own figures and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = [
    ["benchmarks.ingest.throughput"],
    ["benchmarks.ingest.workers"],  # PostgreSQL, 1 and 2 API workers
    ["benchmarks.detection.throughput"],
    ["benchmarks.detection.faust_ceiling"],  # what Faust costs per message, doing nothing
    ["benchmarks.detection.latency"],  # --mix worst: every result a new region
    ["benchmarks.detection.latency", "--mix", "bc"],  # the Drug Checking BC export
    ["benchmarks.detection.backtest_bc"],
    ["benchmarks.detection.sparse_burden"],  # false signals per area-month, sparse counts
    ["benchmarks.alerts.fanout"],
    ["benchmarks.referrals.matching"],
    ["benchmarks.dashboard.sse_latency"],  # signals.v1 -> a connected SSE client
    ["benchmarks.dashboard.pages"],  # each page with a year of data in the read model
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    args = parser.parse_args()
    failed = []
    for module, *options in BENCHMARKS:
        name = " ".join([module, *options])
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        cmd = [sys.executable, "-m", module, *options, *(["--quick"] if args.quick else [])]
        code = subprocess.run(cmd, check=False).returncode
        print(f"=== {name}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
