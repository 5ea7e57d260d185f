"""Measuring the processes of a benchmark or a test run: CPU time per process from /proc,
how the cores were shared during a phase, waiting for an HTTP service to answer."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import httpx


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (uvicorn's workers), from
    /proc; 0 where there is no /proc."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in found]


class CpuShare:
    """How the machine's cores were shared during a phase: ingest (all workers), the relay,
    the broker and this client (with wrk). Tells whether a phase was CPU-bound, and where."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs

    def _now(self) -> dict[str, float]:
        mine, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = {name: cpu_seconds(pid) for name, pid in self.procs.items()}
        out["client"] = (mine.user + mine.system + children.ru_utime + children.ru_stime)
        return out

    def __enter__(self) -> CpuShare:
        self.start, self.t0 = self._now(), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        end, elapsed = self._now(), time.perf_counter() - self.t0
        self.cores = {k: round((end[k] - self.start[k]) / elapsed, 2) for k in end}

    def __str__(self) -> str:
        return "CPU in cores: " + ", ".join(f"{k} {v:.2f}" for k, v in self.cores.items())



def wait_http(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {within}s")
