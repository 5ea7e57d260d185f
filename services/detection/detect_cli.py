"""``lookout detect``: run one spike detector over a ``date,count`` CSV.

Points before ``--from`` are history only (baselines; CUSUM's reference mean). Without
``--from`` the first point with enough history for the method is used.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .detectors import DetectorPoint

# The detectors (numpy, scipy) are imported when `detect` runs, not when the `lookout` CLI
# builds its parser: every `lookout` command (the relay, the workers) would pay for them.
# tests/detection/test_detect_cli.py checks this list against `detectors.METHODS`.
METHOD_NAMES = ("ears-c1", "ears-c2", "ears-c3", "cusum", "farrington-flexible", "ewma",
                "threshold", "poisson")


def add_detect_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``detect`` sub-command on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "detect",
        help="run a spike detector over a date,count CSV",
        description="Run a spike detector (see docs/detectors.md) over a date,count CSV.",
    )
    p.add_argument("--method", required=True, choices=METHOD_NAMES)
    p.add_argument("--input", required=True, type=Path, help="CSV with date,count columns")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--from", dest="from_date", type=dt.date.fromisoformat, default=None,
                   help="first date to monitor (YYYY-MM-DD); earlier points are history")
    p.add_argument("--alpha", type=float, default=None,
                   help="significance level (method default when omitted)")
    p.add_argument("--baseline", type=int, default=None,
                   help="baseline length in points (EARS 7, EWMA 28, Poisson 28)")
    p.add_argument("--min-sigma", type=float, default=0.0, help="EARS minimum sigma")
    p.add_argument("--k", type=float, default=1.04, help="CUSUM reference value")
    p.add_argument("--h", type=float, default=2.26, help="CUSUM decision boundary")
    p.add_argument("--trans", choices=("standard", "rossi", "anscombe"), default="standard",
                   help="CUSUM standardisation")
    p.add_argument("--b", type=int, default=5, help="Farrington: years back")
    p.add_argument("--w", type=int, default=3, help="Farrington: half-window in weeks")
    p.add_argument("--weights-threshold", type=float, default=2.58,
                   help="Farrington: Anscombe residual threshold for reweighting")
    p.add_argument("--past-weeks-not-included", type=int, default=None,
                   help="Farrington: recent weeks left out of the fit (default w)")
    p.add_argument("--guard-band", type=int, default=2, help="EWMA guard band")
    p.add_argument("--threshold", type=float, default=None,
                   help="threshold method: alarm when the window count exceeds this")
    p.add_argument("--window", type=int, default=1, help="threshold method: points summed")
    p.set_defaults(handler=run_detect)


def _read_series(path: Path) -> tuple[list[dt.date], list[float]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"date", "count"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs 'date' and 'count' columns")
        dates: list[dt.date] = []
        counts: list[float] = []
        for line, row in enumerate(reader, start=2):
            try:
                dates.append(dt.date.fromisoformat(row["date"].strip()))
                counts.append(float(row["count"]))
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}:{line}: bad date or count ({exc})") from exc
    if any(b <= a for a, b in itertools.pairwise(dates)):
        raise ValueError(f"{path}: dates must be strictly increasing")
    return dates, counts


def _call(
    args: argparse.Namespace, dates: list[dt.date]
) -> tuple[Callable[..., list[DetectorPoint]], dict[str, Any], int]:
    """The detector, its keyword arguments and the default start index."""
    from .detectors import METHODS
    from .detectors.farrington import default_start as _farrington_start

    method: str = args.method
    kwargs: dict[str, Any] = {}
    if method.startswith("ears-"):
        baseline = 7 if args.baseline is None else args.baseline
        kwargs = {"baseline": baseline, "min_sigma": args.min_sigma}
        if args.alpha is not None:
            kwargs["alpha"] = args.alpha
        lag = {"ears-c1": 0, "ears-c2": 2, "ears-c3": 4}[method]
        return METHODS[method], kwargs, baseline + lag
    if method == "cusum":
        kwargs = {"k": args.k, "h": args.h, "trans": args.trans}
        return METHODS[method], kwargs, 7 if args.baseline is None else args.baseline
    if method == "farrington-flexible":
        kwargs = {"dates": dates, "b": args.b, "w": args.w,
                  "weights_threshold": args.weights_threshold,
                  "past_weeks_not_included": args.past_weeks_not_included}
        if args.alpha is not None:
            kwargs["alpha"] = args.alpha
        return METHODS[method], kwargs, _farrington_start(dates, args.b, args.w)
    if method == "ewma":
        kwargs = {"baseline": 28 if args.baseline is None else args.baseline,
                  "guard_band": args.guard_band}
        if args.alpha is not None:
            kwargs["alpha"] = args.alpha
        return METHODS[method], kwargs, 7 + args.guard_band
    if method == "threshold":
        if args.threshold is None:
            raise ValueError("--threshold is required for --method threshold")
        kwargs = {"threshold": args.threshold, "window": args.window}
        return METHODS[method], kwargs, args.window - 1
    kwargs = {"baseline": 28 if args.baseline is None else args.baseline}
    if args.alpha is not None:
        kwargs["alpha"] = args.alpha
    return METHODS[method], kwargs, kwargs["baseline"]


def _number(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def run_detect(args: argparse.Namespace) -> int:
    """Run the detector and print one row per monitored point; 0 on success, 2 on bad input."""
    try:
        dates, counts = _read_series(args.input)
        func, kwargs, default_start = _call(args, dates)
        if args.from_date is None:
            start = min(default_start, len(counts))
        else:
            start = next((i for i, d in enumerate(dates) if d >= args.from_date), len(counts))
        points = func(counts, start=start, **kwargs)
    except (OSError, ValueError, ArithmeticError) as exc:
        print(f"lookout detect: error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        rows = [
            {"date": dates[p.index].isoformat(), "count": p.count,
             "upperbound": p.upperbound, "alarm": p.alarm}
            for p in points
        ]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["date", "count", "upperbound", "alarm"])
    for p in points:
        ub = "" if p.upperbound is None else _number(p.upperbound)
        out.writerow([dates[p.index].isoformat(), _number(p.count), ub, int(p.alarm)])
    return 0


__all__ = ["add_detect_parser", "run_detect"]
