"""Process-wide tuning (GC thresholds, frozen objects, the switch interval) happens in the
`lookout` entry points only: importing a service changes nothing in the importing process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

STATE = ("import gc, json, sys\n"
         "def state():\n"
         "    return [list(gc.get_threshold()), sys.getswitchinterval(), gc.get_freeze_count()]\n")


def _run(tmp_path: Path, body: str) -> list[list[object]]:
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_VAR_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", STATE + body], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: list[list[object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_services_changes_no_process_setting(tmp_path: Path) -> None:
    before, after = _run(tmp_path, (
        "before = state()\n"
        "import services.ingest.api, shared.group_commit, services.alerts.agents\n"
        "import services.dashboard.api\n"
        "print(json.dumps([before, state()]))\n"))
    assert after == before


def test_the_entry_points_tune_their_process(tmp_path: Path) -> None:
    default, ingest, alerts = _run(tmp_path, (
        "default = state()\n"
        "from services import tuning\n"
        "from services.cli import processes\n"
        "processes.tune_http_process('ingest')\n"
        "ingest = state()\n"
        "tuning.tune_alerts_worker()\n"
        "print(json.dumps([default, ingest, state()]))\n"))
    assert ingest[0] == [100_000, 50, 100]
    assert ingest[1] == pytest.approx(0.0002)
    assert isinstance(ingest[2], int) and isinstance(default[2], int)
    assert ingest[2] > default[2]  # the imported app was frozen
    assert alerts[0] == [20_000, 50, 100]


def test_the_dashboard_server_tunes_its_process(tmp_path: Path) -> None:
    default, dashboard = _run(tmp_path, (
        "default = state()\n"
        "from services.cli import processes\n"
        "processes.tune_http_process('dashboard')\n"
        "print(json.dumps([default, state()]))\n"))
    assert dashboard[0] == [10_000, 10, 10]
    assert dashboard[1] == default[1]  # the switch interval is left alone
    assert isinstance(dashboard[2], int) and isinstance(default[2], int)
    assert dashboard[2] > default[2]  # the imported app was frozen
