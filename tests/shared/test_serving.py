"""Several HTTP workers, each with its own SO_REUSEPORT socket (shared.serving): new
connections are spread over the workers, a worker that dies is replaced, and SIGTERM stops
them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.broker import free_port
from shared.settings import REPO_ROOT


def _pids(base: str, connections: int) -> list[int]:
    """The worker pid behind each of `connections` new connections."""
    out = []
    for _ in range(connections):
        with httpx.Client(base_url=base, timeout=5) as client:  # a new connection each
            out.append(int(client.get("/").text))
    return out


def _wait_up(base: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.get(base, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{base} did not answer within {within}s")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    code = ("from shared.serving import serve_workers; raise SystemExit(serve_workers("
            f"'tests.shared.pid_app:app', '127.0.0.1', {port}, 2))")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_new_connections_are_spread_over_the_workers(
    served: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = served
    # 24 connections all on one of two workers would happen once in 8 million runs.
    pids = _pids(base, 24)
    assert len(set(pids)) == 2
    assert proc.pid not in pids  # the parent only supervises


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
    served: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = served
    before = set(_pids(base, 24))
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    after: set[int] = set()
    while time.monotonic() < deadline:
        after = set(_pids(base, 24))
        if len(after) == 2 and victim not in after:
            break
        time.sleep(0.3)
    assert len(after) == 2 and victim not in after, (before, after)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for pid in after:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid
    with pytest.raises(httpx.HTTPError):
        httpx.get(base, timeout=2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_workers_stop_when_the_supervisor_is_killed(
    served: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, base = served
    workers = set(_pids(base, 24))
    proc.kill()  # no chance to stop its workers
    proc.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their supervisor"
        time.sleep(0.2)
