"""Serve an ASGI app from several uvicorn worker processes that each own a listening socket
(SO_REUSEPORT), so the kernel spreads connections evenly over the workers.

Why not `uvicorn --workers N`: its workers share one listening socket, and whichever is
awake when connections arrive accepts all that are waiting. Clients that keep their
connections open (sites posting batches, a load test's 32 clients) then often all land on
one worker, which works its one core while the other idles: batches ran at one core of two.
With one socket per worker in a SO_REUSEPORT group, Linux hashes each new connection to
one of the workers.

The parent only supervises: it restarts a worker that dies, and stops them all on SIGTERM
or SIGINT (each finishes its requests in flight, as uvicorn does on SIGTERM).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 15.0
RESTART_PAUSE_SECONDS = 1.0


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound socket in the SO_REUSEPORT group of (host, port), inheritable by uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _stop_with_parent(parent: int) -> None:
    """A worker whose supervisor died (SIGKILL, a crash) stops too, as on SIGTERM, instead of
    serving on unsupervised."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(app: str, host: str, port: int, setup: Callable[[], None] | None) -> None:
    if setup is not None:
        setup()
    threading.Thread(target=_stop_with_parent, args=(os.getppid(),), daemon=True,
                     name="stop-with-parent").start()
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


def serve_workers(app: str, host: str, port: int, workers: int,
                  setup: Callable[[], None] | None = None) -> int:
    """Run `app` (an import string) in `workers` processes on (host, port) until SIGTERM
    or SIGINT; `setup` runs first in each worker (e.g. logging). Returns the exit code."""
    # Fail here, in the parent, when the port is taken by something outside the group.
    reuseport_socket(host, port).close()
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> SpawnProcess:
        process = context.Process(target=_worker, args=(app, host, port, setup),
                                  name="lookout-http-worker")
        process.start()
        return process

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    processes = [start() for _ in range(workers)]
    log.info("serving %s on %s:%d with %d workers (SO_REUSEPORT)", app, host, port, workers)
    try:
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.error("HTTP worker %s exited with %s; starting another",
                              process.pid, process.exitcode)
                    time.sleep(RESTART_PAUSE_SECONDS)
                    processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
