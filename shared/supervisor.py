"""Run a set of child processes, restart one that dies (with backoff), and make every child
end when its supervisor ends, even by SIGKILL (`lookout run`, `lookout broker`).

Children run in sessions of their own (a Ctrl-C in the terminal reaches the supervisor
only, which stops them in order) and with the parent-death signal set (Linux
`PR_SET_PDEATHSIG`): the kernel sends them SIGTERM when the supervisor dies, however it
dies. Without it, a `kill -9` of `lookout run` left the embedded broker and the services
running, holding their ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from honcho.printer import Message, Printer

PR_SET_PDEATHSIG = 1
SYSTEM = "system"

_libc: Any = None
if sys.platform == "linux":
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen that makes the child get SIGTERM when this process (the
    thread that starts it: start children from the main thread) dies; None where Linux's
    prctl is missing. It also covers the parent dying between fork and prctl."""
    if _libc is None:
        return None
    parent = os.getpid()
    libc = _libc

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised process: its command, or a `start` function for a special one."""

    name: str
    argv: list[str]
    start: Callable[[], subprocess.Popen[bytes]] | None = None
    on_exit: Callable[[], None] | None = None  # e.g. the broker: hold its dependents
    after_restart: Callable[[], None] | None = None  # e.g. the broker: release them
    held: bool = False  # stopped on purpose, not restarted until released
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    stop_last: bool = False  # the broker: stopped after the others
    reader: threading.Thread | None = field(default=None, repr=False)


class Supervisor:
    """Start children, print their output prefixed with their names, restart the ones that
    exit (after `backoff_initial` s, doubling to `backoff_max`, back to the start after a
    run of `stable_after` s), and stop them all on SIGINT/SIGTERM (SIGKILL after `grace`)."""

    def __init__(self, *, env: dict[str, str], cwd: str, grace: float = 20.0,
                 backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 stable_after: float = 30.0, out: IO[str] | None = None) -> None:
        self.env, self.cwd, self.grace = env, cwd, grace
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.stable_after = stable_after
        out = out or sys.stdout
        self.printer = Printer(out, colour=out.isatty())
        self.children: dict[str, Child] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def add(self, child: Child) -> None:
        self.children[child.name] = child
        self.printer.width = max(self.printer.width, len(child.name), len(SYSTEM))

    def say(self, text: str, name: str = SYSTEM) -> None:
        with self.lock:
            self.printer.write(Message(type="line", data=text.rstrip("\n") + "\n",
                                       time=datetime.datetime.now(), name=name, colour=None))

    # -- processes ------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start one child now (before `run`, e.g. the broker the others need)."""
        self._spawn(self.children[name])

    def _spawn(self, child: Child) -> None:
        if child.start is not None:
            child.process = child.start()
        else:
            child.process = subprocess.Popen(
                child.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent())
        child.started_at = time.monotonic()
        child.restart_at = None
        self.say(f"{child.name} started (pid={child.process.pid})")
        if child.process.stdout is not None:
            child.reader = threading.Thread(target=self._pump, args=(child, child.process),
                                            daemon=True, name=f"output-{child.name}")
            child.reader.start()

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(raw.decode(errors="replace"), child.name)
        process.stdout.close()

    def hold(self, names: list[str], reason: str, grace: float = 5.0) -> None:
        """Stop these children (SIGTERM, SIGKILL after `grace`) and keep them stopped until
        `release`; main thread only."""
        children = [self.children[n] for n in names]
        for child in children:
            child.held, child.restart_at = True, None
            self.say(f"{child.name}: stopping until {reason}")
            self._terminate(child)
        self._wait_stopped(children, grace)

    def release(self, names: list[str]) -> None:
        """Start held children again; main thread only."""
        for name in names:
            child = self.children[name]
            if child.held:
                child.held = False
                self._spawn(child)

    def _check(self, child: Child, now: float) -> None:
        process = child.process
        if child.held:
            return
        if child.restart_at is not None:
            if now >= child.restart_at:
                self._spawn(child)
                child.restarts += 1
                if child.after_restart is not None:
                    child.after_restart()
            return
        if process is None or process.poll() is None:
            return
        if child.reader is not None:
            child.reader.join(1)
        ran = now - child.started_at
        child.backoff = (self.backoff_initial if ran >= self.stable_after or not child.backoff
                         else min(child.backoff * 2, self.backoff_max))
        child.restart_at = now + child.backoff
        self.say(f"{child.name} exited (rc={process.returncode}) after {ran:.0f}s; "
                 f"restarting in {child.backoff:.1f}s (restart {child.restarts + 1})")
        if child.on_exit is not None:
            child.on_exit()

    def _terminate(self, child: Child) -> None:
        if child.process is not None and child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()

    def _wait_stopped(self, children: list[Child], grace: float | None = None) -> None:
        deadline = time.monotonic() + (self.grace if grace is None else grace)
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"sending SIGKILL to {child.name} (pid {child.process.pid})")
                child.process.kill()
                child.process.wait()
            if child.reader is not None:
                child.reader.join(1)
            self.say(f"{child.name} stopped (rc={child.process.returncode})")

    # -- the loop ---------------------------------------------------------------------

    def run(self, started: Callable[[], None] | None = None) -> int:
        """Start every child (in the order added) and supervise until SIGINT or SIGTERM;
        `started` runs once everything is started. Returns 0."""

        def stop(signum: int, _frame: Any) -> None:
            if not self.stopping:
                self.say(f"{signal.Signals(signum).name} received: stopping")
            self.stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children.values():
                if child.process is None:
                    self._spawn(child)
            if started is not None:
                started()
            while not self.stopping:
                time.sleep(0.2)
                now = time.monotonic()
                for child in list(self.children.values()):
                    if not self.stopping:
                        self._check(child, now)
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def stop_all(self) -> None:
        """SIGTERM to every child, the `stop_last` ones after the others have stopped."""
        self.stopping = True
        first = [c for c in self.children.values() if not c.stop_last]
        last = [c for c in self.children.values() if c.stop_last]
        for group in (first, last):
            for child in group:
                self._terminate(child)
            self._wait_stopped(group)
