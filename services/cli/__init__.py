"""The `lookout` command."""

from __future__ import annotations

import argparse

from services.cli.accounts import (
    cmd_officials_create,
    cmd_officials_disable,
    cmd_officials_keys,
    cmd_officials_list,
    cmd_sites_announce,
    cmd_sites_create,
)
from services.cli.data import (
    cmd_dashboard_rebuild,
    cmd_db_upgrade,
    cmd_providers_export,
    cmd_providers_import,
    cmd_referrals_purge,
    cmd_seed,
)
from services.cli.processes import cmd_broker, cmd_relay, cmd_serve, cmd_topics, cmd_worker
from services.cli.run import cmd_run, cmd_smoke
from services.detection.detect_cli import add_detect_parser, run_detect


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookout", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="set up and run the whole system locally").set_defaults(
        func=cmd_run)
    p = sub.add_parser("broker", help="run the embedded Tansu broker until stopped")
    p.add_argument("--port", type=int, default=0, help="default: LOOKOUT_BROKER_PORT (9092)")
    p.set_defaults(func=cmd_broker)
    sub.add_parser("topics", help="create the registered topics").set_defaults(func=cmd_topics)
    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
    p = sub.add_parser("seed", help="create the demo site, subscriber and provider directory")
    p.add_argument("--dashboard-data", action="store_true",
                   help="also the dashboard's demo data (what `lookout run` seeds): three "
                   "weeks of the Drug Checking BC export, synthetic overdose reports")
    p.set_defaults(func=cmd_seed)
    sites = sub.add_parser("sites", help="drug-checking sites").add_subparsers(
        dest="sites_command", required=True)
    p = sites.add_parser("create", help="create a site; prints its API key on the last line")
    p.add_argument("name")
    p.add_argument("--scopes", nargs="+", choices=["results", "reports", "referrals"],
                   default=["results", "reports"])
    p.set_defaults(func=cmd_sites_create)
    p = sites.add_parser("announce", help="announce every site key again (after an upgrade: "
                         "the dashboard learns the names of sites made before)")
    p.set_defaults(func=cmd_sites_announce)
    officials = sub.add_parser("officials", help="officials' dashboard accounts"
                               ).add_subparsers(dest="officials_command", required=True)
    p = officials.add_parser("create", help="create an account; prints a one-time setup "
                             "link (or, --password, a password) on the last line")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["viewer", "reviewer", "admin"])
    p.add_argument("--regions", required=True,
                   help="region prefixes, comma-separated (us/wa,us/or; * for every region)")
    p.add_argument("--password", action="store_true",
                   help="print a generated password instead of a setup link")
    p.set_defaults(func=cmd_officials_create)
    officials.add_parser("list", help="list the accounts").set_defaults(func=cmd_officials_list)
    p = officials.add_parser("disable", help="disable an account and end its sessions")
    p.add_argument("name")
    p.set_defaults(func=cmd_officials_disable)
    officials.add_parser("keys", help="print a new Ed25519 key pair for the review "
                         "credential (LOOKOUT_DASHBOARD_SIGNING_KEY / _PUBLIC_KEY)"
                         ).set_defaults(func=cmd_officials_keys)
    p = sub.add_parser("serve", help="run one HTTP service")
    p.add_argument("service", choices=["ingest", "alerts", "referrals", "dashboard"])
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("worker", help="run one Faust worker")
    p.add_argument("service", choices=["detection", "alerts", "referrals", "dashboard"])
    p.set_defaults(func=cmd_worker)
    dashboard = sub.add_parser("dashboard", help="the dashboard's read model").add_subparsers(
        dest="dashboard_command", required=True)
    dashboard.add_parser("rebuild", help="empty the read model and replay its topics from "
                         "the start").set_defaults(func=cmd_dashboard_rebuild)
    providers = sub.add_parser("providers", help="the referral provider directory (HSDS 3.0)"
                               ).add_subparsers(dest="providers_command", required=True)
    p = providers.add_parser("import", help="import an HSDS data package (dir, .zip, .json)")
    p.add_argument("path")
    p.set_defaults(func=cmd_providers_import)
    p = providers.add_parser("export", help="write the directory as an HSDS CSV package")
    p.add_argument("directory")
    p.set_defaults(func=cmd_providers_export)
    referrals = sub.add_parser("referrals", help="referrals").add_subparsers(
        dest="referrals_command", required=True)
    referrals.add_parser("purge", help="remove personal data past retention").set_defaults(
        func=cmd_referrals_purge)
    p = sub.add_parser("relay", help="publish the services' outbox tables to Kafka")
    p.add_argument("services", nargs="*", help="default: every service's outbox")
    p.set_defaults(func=cmd_relay)
    p = sub.add_parser("smoke", help="check the whole pipeline against a running stack")
    p.add_argument("--api-key", default=None, help="default: the demo site's key")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_smoke)
    add_detect_parser(sub)
    sub.choices["detect"].set_defaults(func=run_detect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
