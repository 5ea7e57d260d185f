"""`lookout db`, `seed`, `dashboard rebuild`, `providers`, `referrals purge`: the data."""

from __future__ import annotations

import argparse

from services.cli.processes import wait_for_broker_and_topics
from shared.settings import Settings, get_settings


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from migrations import upgrade

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    print(f"database migrated: {settings.sqlalchemy_url}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from services.demo import seed_demo

    settings = get_settings()
    if args.dashboard_data:
        seed_dashboard(settings)
    demo = seed_demo(settings)
    print(f"demo region: {demo.region_id} ({demo.region_name})")
    print(f"demo API key: {demo.api_key}")  # the last line: scripts read the key from it
    return 0


DEMO_OFFICIAL = "demo"


def seed_official(settings: Settings) -> str:
    """A demo reviewer of every region (`lookout run`), its password shown once: the banner
    line that says how to sign in."""
    from services.dashboard import accounts
    from shared.db import session_scope

    with session_scope(settings.sqlalchemy_url) as session:
        if accounts.by_name(session, DEMO_OFFICIAL) is not None:
            return (f"    dashboard sign-in: {DEMO_OFFICIAL!r} (its password was shown when it "
                    "was made; `lookout officials create` makes another)\n")
        new = accounts.create(session, settings, DEMO_OFFICIAL, "reviewer", "*",
                              with_password=True)
        accounts.audit(session, "cli", "account_create", target=DEMO_OFFICIAL,
                       role="reviewer", regions=["*"])
    return (f"    dashboard sign-in: {DEMO_OFFICIAL!r} / {new.password}   (a reviewer of every "
            "region; the password is shown once)\n")


def seed_dashboard(settings: Settings) -> None:
    from services.demo_data import seed_dashboard_data

    data = seed_dashboard_data(settings)
    if data.seeded:
        print(f"dashboard demo data: {data.results} drug-checking results (three weeks of the "
              f"Drug Checking BC export) and {data.reports} synthetic overdose reports")



def cmd_dashboard_rebuild(args: argparse.Namespace) -> int:
    from services.dashboard.consumer import rebuild

    settings = get_settings()
    wait_for_broker_and_topics(settings)
    read = rebuild(settings)
    print("dashboard read model rebuilt: " + ", ".join(f"{topic} {n}"
                                                      for topic, n in read.items()))
    return 0


def cmd_providers_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.referrals.hsds import import_path
    from shared.db import session_scope

    with session_scope(get_settings().sqlalchemy_url) as session:
        report = import_path(session, Path(args.path))
    print(report.summary())
    return 0


def cmd_providers_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.referrals.hsds import export_rows, write_package
    from shared.db import session_scope

    with session_scope(get_settings().sqlalchemy_url) as session:
        rows = export_rows(session)
    print(f"HSDS package written: {write_package(rows, Path(args.directory))}")
    return 0


def cmd_referrals_purge(args: argparse.Namespace) -> int:
    from services.referrals.service import purge
    from shared.db import session_scope, utcnow

    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        count = purge(session, settings, utcnow())
    print(f"referrals purged of personal data: {count}")
    return 0
