"""tools/system-packages.sh: what `make test` and `make bench` run before anything long."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "system-packages.sh"


def _run(*pairs: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(SCRIPT), *pairs], env={"PATH": path},
                          capture_output=True, text=True, timeout=30, check=False)


def test_present_commands_need_nothing() -> None:
    done = _run(f"{sys.executable}:python3", path="/nonexistent")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_a_missing_package_without_apt_get_stops_at_once_with_the_command() -> None:
    done = _run(f"{sys.executable}:python3", "no-such-tool-here:no-such-package",
                path="/nonexistent")
    assert done.returncode == 1
    assert "sudo apt-get install -y no-such-package" in done.stderr
    assert "python3" not in done.stderr
