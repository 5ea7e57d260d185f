"""Alert burden on sparse counts: signals per area and month, per spike method and setting.

    .venv/bin/python -m benchmarks.detection.sparse_burden            # 30 areas per rate, a year
    .venv/bin/python -m benchmarks.detection.sparse_burden --quick    # 6 areas, half a year

A county with a few overdoses a week is the common case of a real deployment, and the place
where a detector tuned for large counts fires on noise. This backtest runs every spike method
the worker has, through the worker's own evaluation (`services.detection.spikes.evaluate`,
with the method's history window, exactly as the spikes agent calls it), over simulated
county series with no outbreak in them, so every signal it counts is a false alarm.

The simulation (documented, seeded): each area has a base rate of 2, 4 or 7 overdoses a week;
a day's count is Poisson with a gamma-distributed daily rate (shape 4: real overdose counts
are overdispersed, clustered by supply and weekday), times a weekday effect (Friday-Sunday
+25 %). Day buckets for every method but farringtonFlexible, which is weekly (weekly sums of
the same process, six years so that its five reference years exist). A year of buckets is
evaluated after the warm-up (half a year with --quick). One alarmed bucket counts as one
signal (the worker's cooldown is 24 h, a day bucket's length).

Prints a table (signals per area per month, and the share of area-months with at least one)
and saves JSON under benchmarks/results/. docs/detectors.md quotes the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.detection.spikes import evaluate, history_length

RESULTS = Path(__file__).resolve().parents[1] / "results"
WEEKLY_RATES = (2.0, 4.0, 7.0)
WEEKEND = np.array([1.0, 1.0, 1.0, 1.0, 1.25, 1.25, 1.25])  # Monday first
# (label, method, params): each method at its defaults, and the settings that tame it
CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("poisson (default)", "poisson", {}),
    ("ears-c1", "ears-c1", {}),
    ("ears-c2", "ears-c2", {}),
    ("ears-c2 min_sigma 0.5", "ears-c2", {"min_sigma": 0.5}),
    ("ears-c2 min_sigma 1", "ears-c2", {"min_sigma": 1.0}),
    ("ears-c3", "ears-c3", {}),
    ("ears-c3 min_sigma 1", "ears-c3", {"min_sigma": 1.0}),
    ("cusum", "cusum", {}),
    ("ewma", "ewma", {}),
    ("threshold 3 per day (ODMAP-style)", "threshold", {"threshold": 3}),
    ("farrington-flexible (weekly)", "farrington-flexible", {}),
]


def daily_series(rng: np.random.Generator, weekly_rate: float, days: int) -> list[float]:
    base = weekly_rate / float(np.mean(WEEKEND)) / 7.0
    rate = rng.gamma(4.0, base / 4.0, days) * np.resize(WEEKEND, days)
    return [float(v) for v in rng.poisson(rate)]


def burden(method: str, params: dict[str, Any], areas: list[list[float]],
           bucket_days: int, evaluated: int) -> dict[str, float]:
    start = dt.date(2020, 1, 6)
    need = history_length(method, params)
    signals: list[int] = []
    months_with_signal = 0
    months = 0
    for series in areas:
        first = len(series) - evaluated
        assert first >= need, (method, first, need)
        per_month: dict[tuple[int, int], int] = {}
        for k in range(first, len(series)):
            dates = None
            if method == "farrington-flexible":
                dates = [start + dt.timedelta(days=bucket_days * i) for i in range(k - need, k + 1)]
            ev = evaluate(method, params, series[k - need:k], series[k], dates)
            day = start + dt.timedelta(days=bucket_days * k)
            per_month[(day.year, day.month)] = per_month.get((day.year, day.month), 0) + ev.alarm
        signals.append(sum(per_month.values()))
        months += len(per_month)
        months_with_signal += sum(1 for v in per_month.values() if v)
    total_months = months / max(1, len(areas))
    return {"signals_per_area_month": float(np.mean(signals)) / total_months,
            "share_of_area_months_with_a_signal": months_with_signal / max(1, months)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    per_rate = 6 if args.quick else 30
    evaluated_days, evaluated_weeks = (182, 26) if args.quick else (365, 52)
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for rate in WEEKLY_RATES:
        weeks = history_length("farrington-flexible", {}) + evaluated_weeks
        days = 7 * weeks
        areas = [daily_series(rng, rate, days) for _ in range(per_rate)]
        weekly = [[float(sum(a[i:i + 7])) for i in range(0, days, 7)] for a in areas]
        daily = [a[-(evaluated_days + 120):] for a in areas]
        for label, method, params in CONFIGS:
            if method == "farrington-flexible":
                figures = burden(method, params, weekly, 7, evaluated_weeks)
            else:
                figures = burden(method, params, daily, 1, evaluated_days)
            rows.append({"weekly_rate": rate, "setting": label, "method": method,
                         "params": params, **figures})
            print(f"{rate:>4.0f}/week  {label:<36} {figures['signals_per_area_month']:6.2f} "
                  f"signals/area/month, {figures['share_of_area_months_with_a_signal']:5.0%} "
                  "of area-months with one", flush=True)
    report = {"when": dt.datetime.now(dt.UTC).isoformat(), "seed": args.seed,
              "areas_per_rate": per_rate, "evaluated_days": evaluated_days,
              "evaluated_weeks": evaluated_weeks, "seconds": time.monotonic() - started,
              "load_average": os.getloadavg(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"detection_sparse_burden{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
