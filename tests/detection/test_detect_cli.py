"""``lookout detect`` sub-command: parsing, CSV/JSON output, defaults and errors."""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
from pathlib import Path
from statistics import NormalDist

import pytest

from services.detection.detect_cli import add_detect_parser, run_detect

SALMONELLA = (
    Path(__file__).resolve().parents[3] / "shared" / "data"
    / "salmonella-newport-germany-weekly.csv"
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="lookout")
    add_detect_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["detect", *argv])
    assert args.handler is run_detect
    rc = run_detect(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def write_series(tmp_path: Path, counts: list[int]) -> Path:
    path = tmp_path / "series.csv"
    lines = ["date,count,region"] + [
        f"2024-01-{i + 1:02d},{c},north" for i, c in enumerate(counts)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


COUNTS = [3, 5, 4, 6, 2, 4, 5, 3, 7, 4, 15]


def test_ears_c1_csv_default_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--method", "ears-c1", "--input", str(write_series(tmp_path, COUNTS))],
                     capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["date", "count", "upperbound", "alarm"]
    assert [r["date"] for r in rows] == [f"2024-01-{d:02d}" for d in range(8, 12)]
    ref = COUNTS[0:7]
    expected = statistics.mean(ref) + NormalDist().inv_cdf(0.999) * statistics.stdev(ref)
    assert float(rows[0]["upperbound"]) == pytest.approx(expected, abs=1e-6)
    assert rows[0]["count"] == "3"
    assert [r["alarm"] for r in rows] == ["0", "0", "0", "1"]


def test_from_date_includes_history_rows_without_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = run(["--method", "ears-c2", "--from", "2024-01-05", "--input",
                      str(write_series(tmp_path, COUNTS)), "--alpha", "0.05"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["date"] == "2024-01-05"
    assert rows[0]["upperbound"] == "" and rows[0]["alarm"] == "0"
    assert rows[-1]["upperbound"] != ""


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--method", "threshold", "--threshold", "10", "--format", "json",
                      "--input", str(write_series(tmp_path, COUNTS))], capsys)
    assert rc == 0
    data = json.loads(out)
    assert len(data) == len(COUNTS)
    assert data[-1] == {"date": "2024-01-11", "count": 15.0, "upperbound": 10.0, "alarm": True}


def test_cusum_uses_history_before_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_series(tmp_path, [2, 2, 2, 2, 2, 6, 7])
    rc, out, _ = run(["--method", "cusum", "--from", "2024-01-06", "--input", str(path)], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["upperbound"], r["alarm"]) for r in rows] == [("7", "0"), ("5", "1")]


def test_missing_threshold_and_bad_input_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(["--method", "threshold", "--input", str(write_series(tmp_path, COUNTS))],
                     capsys)
    assert rc == 2 and "--threshold" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("day,n\n2024-01-01,1\n")
    rc, _, err = run(["--method", "poisson", "--input", str(bad)], capsys)
    assert rc == 2 and "date" in err
    rc, _, err = run(["--method", "poisson", "--input", str(tmp_path / "nope.csv")], capsys)
    assert rc == 2


def test_every_method_runs_on_the_salmonella_series(capsys: pytest.CaptureFixture[str]) -> None:
    for method in ("ears-c1", "ears-c2", "ears-c3", "cusum", "farrington-flexible", "ewma",
                   "poisson"):
        rc, out, _ = run(["--method", method, "--from", "2011-01-03", "--input",
                          str(SALMONELLA)], capsys)
        assert rc == 0, method
        rows = {r["date"]: r for r in csv.DictReader(io.StringIO(out))}
        assert next(iter(rows)) == "2011-01-03"
        assert rows["2011-11-07"]["alarm"] == "1", method  # 41 cases in ISO week 2011-W45


def test_farrington_default_from_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["--method", "farrington-flexible", "--input", str(SALMONELLA),
                      "--b", "4", "--w", "2", "--weights-threshold", "1",
                      "--past-weeks-not-included", "3", "--alpha", "0.1"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["date"] == "2008-01-14"  # index 52*4+2 (0-based)
    assert any(r["alarm"] == "1" for r in rows if r["date"] == "2011-11-07")


def test_method_names_match_the_detector_registry() -> None:
    from services.detection.detect_cli import METHOD_NAMES
    from services.detection.detectors import METHODS

    assert METHOD_NAMES == tuple(METHODS)


def test_the_lookout_cli_does_not_import_the_detectors() -> None:
    """`lookout relay` and the workers start without numpy/scipy's import time."""
    import subprocess
    import sys

    code = ("import sys, services.cli; "
            "print(any(m == 'scipy' or m.startswith('services.detection.detectors') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
