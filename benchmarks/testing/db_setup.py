"""What a test's own database costs to set up: migrated in place (the test fixtures before)
against copied from a template migrated once (SQLite: a file copy; PostgreSQL: CREATE
DATABASE ... TEMPLATE). Old and new alternate in one run, so the ratios hold on a busy
machine. Needs PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`)."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

from migrations import upgrade

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def sql(statement: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(statement.encode())


def timed(step: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    step(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="db-setup-"))
    template_file = tmp / "template.db"
    upgrade(f"sqlite:///{template_file}")
    template = f"bench_template_{uuid.uuid4().hex[:8]}"
    sql(f'CREATE DATABASE "{template}"')
    upgrade(PG + template)
    times: dict[str, list[float]] = {"sqlite_migrate": [], "sqlite_copy": [],
                                     "pg_create_migrate_drop": [], "pg_template_drop": []}

    def pg_old(name: str) -> None:
        sql(f'CREATE DATABASE "{name}"')
        upgrade(PG + name)
        sql(f'DROP DATABASE "{name}" WITH (FORCE)')

    def pg_new(name: str) -> None:
        sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        sql(f'DROP DATABASE "{name}" WITH (FORCE)')

    try:
        for i in range(rounds):
            times["sqlite_migrate"].append(timed(upgrade, f"sqlite:///{tmp}/old{i}.db"))
            times["sqlite_copy"].append(timed(shutil.copyfile, template_file, tmp / f"new{i}.db"))
            times["pg_create_migrate_drop"].append(timed(pg_old, f"bench_{uuid.uuid4().hex[:8]}"))
            times["pg_template_drop"].append(timed(pg_new, f"bench_{uuid.uuid4().hex[:8]}"))
    finally:
        sql(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        shutil.rmtree(tmp)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"rounds": rounds, "seconds": times, "median_seconds": medians,
              "sqlite_ratio": medians["sqlite_migrate"] / medians["sqlite_copy"],
              "pg_ratio": medians["pg_create_migrate_drop"] / medians["pg_template_drop"]}
    for name, median in medians.items():
        print(f"{name:24} median {median:8.4f} s")
    print(f"old/new: SQLite {result['sqlite_ratio']:.0f}x, PostgreSQL {result['pg_ratio']:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"testing_db_setup{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
