"""The `lookout` command."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import httpx

from services.detection.detect_cli import add_detect_parser, run_detect
from shared.settings import REPO_ROOT, Settings, get_settings


def _settings() -> Settings:
    return get_settings()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from migrations import upgrade

    settings = _settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    print(f"database migrated: {settings.sqlalchemy_url}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from services.demo import seed_demo

    settings = _settings()
    if args.dashboard_data:
        _seed_dashboard(settings)
    demo = seed_demo(settings)
    print(f"demo region: {demo.region_id} ({demo.region_name})")
    print(f"demo API key: {demo.api_key}")  # the last line: scripts read the key from it
    return 0


DEMO_OFFICIAL = "demo"


def _seed_official(settings: Settings) -> str:
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


def _seed_dashboard(settings: Settings) -> None:
    from services.demo_data import seed_dashboard_data

    data = seed_dashboard_data(settings)
    if data.seeded:
        print(f"dashboard demo data: {data.results} drug-checking results (three weeks of the "
              f"Drug Checking BC export) and {data.reports} synthetic overdose reports")


def cmd_sites_create(args: argparse.Namespace) -> int:
    from services.ingest.service import create_site
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = _settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            site, key = create_site(session, args.name, args.scopes)
            site_id = site.id
    except ProblemError as exc:  # e.g. the name is taken
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"site {args.name!r} created: {site_id}; scopes {','.join(args.scopes)}")
    print("the API key is shown once; store it now:")
    print(key)
    return 0


def cmd_officials_create(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = _settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            new = accounts.create(session, settings, args.name, args.role, args.regions,
                                  with_password=args.password)
            accounts.audit(session, "cli", "account_create", target=new.account.name,
                           role=args.role, regions=new.account.regions)
            name, regions = new.account.name, new.account.regions
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"official {name!r} created: {args.role} of {', '.join(regions)}")
    if new.password:
        print("the password is shown once; give it to the official now:")
        print(new.password)
    else:
        print("the one-time setup link (valid "
              f"{settings.dashboard_setup_link_hours:g} h) is shown once:")
        print(new.setup_url)
    return 0


def cmd_officials_list(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope

    settings = _settings()
    with session_scope(settings.sqlalchemy_url) as session:
        rows = accounts.list_accounts(session)
        print(f"{'name':24} {'role':9} {'status':14} {'totp':5} regions")
        for a in rows:
            status = "disabled" if a.disabled_at else \
                "setup pending" if not a.password_hash else "active"
            print(f"{a.name:24} {a.role:9} {status:14} {'on' if a.totp_enabled else 'off':5} "
                  f"{','.join(a.regions)}")
    return 0


def cmd_officials_disable(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = _settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            accounts.disable(session, args.name)
            accounts.audit(session, "cli", "account_disable", target=args.name)
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"official {args.name!r} disabled; their sessions are ended")
    return 0


def cmd_officials_keys(args: argparse.Namespace) -> int:
    from shared.officials import new_key_pair

    private, public = new_key_pair()
    print("# the dashboard only:")
    print(f"LOOKOUT_DASHBOARD_SIGNING_KEY='{private.strip()}'")
    print("# every service that verifies officials (alerts):")
    print(f"LOOKOUT_DASHBOARD_PUBLIC_KEY='{public.strip()}'")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from shared.kafka import client_security, ensure_topics, wait_for_broker

    settings = _settings()
    security = client_security(settings)

    async def go() -> list[str]:
        await wait_for_broker(settings.bootstrap_servers, security=security)
        return await ensure_topics(settings.bootstrap_servers, security,
                                   settings.kafka_replication_factor)

    created = asyncio.run(go())
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    return 0


def _wait_for_broker(settings: Settings, timeout: float = 30) -> None:
    from shared.kafka import client_security, ensure_topics, wait_for_broker

    security = client_security(settings)

    async def go() -> None:
        await wait_for_broker(settings.bootstrap_servers, timeout, security)
        await ensure_topics(settings.bootstrap_servers, security,
                            settings.kafka_replication_factor)

    asyncio.run(go())


def cmd_broker(args: argparse.Namespace) -> int:
    from shared.broker import start_tansu

    settings = _settings()
    if not settings.embedded_broker:
        print(f"LOOKOUT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: nothing to embed")
        return 0
    port = args.port or settings.broker_port
    proc = start_tansu(settings.broker_host, port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run `finally`: stop Tansu too
    try:
        _wait_for_broker(settings.model_copy(update={"broker_port": port}))
        print(f"broker ready: Tansu at {settings.broker_host}:{port} (memory storage)",
              flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def _tune_http_process(service: str) -> None:
    """Process-wide tuning for the HTTP process about to serve `service` (services/tuning.py),
    after its app is imported (the tuning freezes what the import made)."""
    from services import tuning

    tune = {"ingest": tuning.tune_ingest_http,
            "dashboard": tuning.tune_dashboard_http}.get(service)
    if tune is not None:
        importlib.import_module(f"services.{service}.api")  # the app, before the tuning
        tune()


def _http_worker_setup(service: str) -> None:
    """What each of `serve_workers`' processes runs before uvicorn serves."""
    from shared.logging import configure_logging

    configure_logging(service)
    _tune_http_process(service)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.stack import http_ports
    from shared.logging import configure_logging

    settings = _settings()
    configure_logging(args.service)
    workers = settings.ingest_workers if args.service == "ingest" else 1
    app, port = f"services.{args.service}.api:app", http_ports(settings)[args.service]
    if workers > 1:
        from shared.serving import serve_workers

        return serve_workers(app, settings.http_host, port, workers,
                             setup=functools.partial(_http_worker_setup, args.service))
    _tune_http_process(args.service)
    uvicorn.run(app, host=settings.http_host, port=port, log_config=None, access_log=False)
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from services.outboxes import OUTBOX_TABLES
    from shared.logging import configure_logging
    from shared.relay import run_relay

    settings = _settings()
    configure_logging("relay")
    start_http_server(settings.relay_metrics_port, addr=settings.http_host)
    models = [OUTBOX_TABLES[name] for name in (args.services or OUTBOX_TABLES)]
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_relay(settings, models, stop)

    asyncio.run(main())
    return 0


def worker_app(service: str) -> Any:
    """The Faust app of `lookout worker SERVICE`, on uvloop (less event-loop overhead per
    message, docs/detection.md). The loop policy is set before the app is imported:
    importing it creates its event loop (topics and tables ask for it), and a policy set
    after that is ignored, which had left every worker on asyncio's loop."""
    import mode.loop

    mode.loop.use("uvloop")
    if service == "detection":
        from services.detection import agents as detection_agents

        return detection_agents.app
    if service == "referrals":
        from services.referrals import agents as referrals_agents

        return referrals_agents.app
    if service == "dashboard":
        from services.dashboard import agents as dashboard_agents

        return dashboard_agents.app
    from services.alerts import agents as alerts_agents

    return alerts_agents.app


def cmd_worker(args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import start_http_server

    from services.stack import metrics_ports
    from shared.logging import configure_logging

    settings = _settings()
    app = worker_app(args.service)
    name = {"detection": "detection", "referrals": "referrals-worker",
            "dashboard": "dashboard-worker"}.get(args.service, "alerts-worker")
    configure_logging(name)
    start_http_server(metrics_ports(settings)[name], addr=settings.http_host)
    # Keep our logging (JSON, phones scrubbed, repeats backed off: shared/logging.py);
    # faust's own replaced it with plain lines, one per aiokafka retry while the broker
    # was away (about 90 lines a second per worker).
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False,
                          override_logging=False)
    if args.service == "alerts":
        from services.tuning import tune_alerts_worker

        tune_alerts_worker()  # process-wide, once the app and its worker exist
    worker.execute_from_commandline()
    return 0


def cmd_dashboard_rebuild(args: argparse.Namespace) -> int:
    from services.dashboard.consumer import rebuild

    settings = _settings()
    _wait_for_broker(settings)
    read = rebuild(settings)
    print("dashboard read model rebuilt: " + ", ".join(f"{topic} {n}"
                                                      for topic, n in read.items()))
    return 0


def cmd_providers_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.referrals.hsds import import_path
    from shared.db import session_scope

    with session_scope(_settings().sqlalchemy_url) as session:
        report = import_path(session, Path(args.path))
    print(report.summary())
    return 0


def cmd_providers_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.referrals.hsds import export_rows, write_package
    from shared.db import session_scope

    with session_scope(_settings().sqlalchemy_url) as session:
        rows = export_rows(session)
    print(f"HSDS package written: {write_package(rows, Path(args.directory))}")
    return 0


def cmd_referrals_purge(args: argparse.Namespace) -> int:
    from services.referrals.service import purge
    from shared.db import session_scope, utcnow

    settings = _settings()
    with session_scope(settings.sqlalchemy_url) as session:
        count = purge(session, settings, utcnow())
    print(f"referrals purged of personal data: {count}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from services.smoke import SmokeFailedError, run_smoke

    try:
        result = run_smoke(_settings(), api_key=args.api_key, timeout=args.timeout)
    except SmokeFailedError as exc:
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"SMS handed to the {result.backend} backend in {result.latency * 1000:.0f} ms:")
    print(f"  {result.body}")
    return 0


def _banner(settings: Settings, api_key: str) -> str:
    from services.smoke import demo_result

    ingest = settings.service_url(settings.ingest_port)
    alerts = settings.service_url(settings.alerts_port)
    curl_body = json.dumps(demo_result(f"curl-{int(time.time())}"))
    broker = settings.bootstrap_servers + (" (embedded Tansu)" if settings.embedded_broker
                                           else "")
    return f"""
  Lookout is starting (Ctrl-C stops everything).
    ingest API     {ingest}/docs
    alerts API     {alerts}/docs
    dev SMS outbox {alerts}/dev/outbox   (JSON: {alerts}/dev/outbox.json)
    referrals      {settings.service_url(settings.referrals_port)}/help   (API: /docs)
    dashboard      {settings.service_url(settings.dashboard_port)}/   (live: /stream)
    broker         {broker}
    database       {settings.sqlalchemy_url}
    demo API key   {api_key}

  Check the whole pipeline:   .venv/bin/lookout smoke
  or submit by hand (then watch the dev SMS outbox):
    curl -s -X POST {ingest}/v1/drug-checks -H 'Authorization: Bearer {api_key}' \\
      -H 'Content-Type: application/json' -d '{curl_body}'
"""


def _announce_when_up(settings: Settings, started: float) -> None:
    from services.stack import http_ports

    urls = [settings.service_url(p) + "/healthz" for p in http_ports(settings).values()]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if all(httpx.get(u, timeout=1).status_code == 200 for u in urls):
                print(f"\n  All HTTP services are up ({time.monotonic() - started:.0f}s). "
                      "Try: .venv/bin/lookout smoke\n", flush=True)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    print("\n  Some services did not come up within 180s; see the log lines above.\n")


STOP_GRACE_SECONDS = 20  # `lookout run`: how long each process gets to stop on Ctrl-C
# The stream workers (`lookout worker ...`) keep their tables in memory, recovered from
# changelogs on the broker: when the embedded broker restarts empty, they start again after
# it, and rebuild from what the relay publishes again (docs/operations.md).
def cmd_run(args: argparse.Namespace) -> int:
    from services.demo import seed_demo
    from services.stack import PROCESSES, command
    from shared.broker import start_tansu
    from shared.supervisor import Child, Supervisor

    started = time.monotonic()
    settings = _settings()
    cmd_db_upgrade(args)
    demo = seed_demo(settings)
    _seed_dashboard(settings)
    official = _seed_official(settings)
    supervisor = Supervisor(env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=str(REPO_ROOT),
                            grace=STOP_GRACE_SECONDS,
                            backoff_initial=settings.run_restart_backoff_seconds,
                            backoff_max=settings.run_restart_backoff_max_seconds)

    # Everything that talks to the broker is stopped while it is away and started after it
    # is back: a client's retry of a batch sent before the restart, landing on the new
    # broker, left a Tansu partition unwritable ("AlreadyExists" on its next batch).
    dependents = [name for name, argv in PROCESSES.items()
                  if argv[0] == "worker" or name == "relay"]

    def broker_stopped() -> None:
        supervisor.hold(dependents, "the embedded broker is back")

    def broker_restarted() -> None:
        try:
            _wait_for_broker(settings)
        except Exception as exc:  # not up yet, or topics not created: the others retry
            supervisor.say(f"broker: {exc!r}")
        supervisor.release(dependents)

    if settings.embedded_broker:
        supervisor.add(Child("broker", [], stop_last=True, on_exit=broker_stopped,
                             after_restart=broker_restarted,
                             start=lambda: start_tansu(settings.broker_host,
                                                       settings.broker_port,
                                                       settings.var_dir / "tansu.log")))
    for name in PROCESSES:
        supervisor.add(Child(name, command(name)))
    if settings.embedded_broker:
        supervisor.start("broker")
    try:
        _wait_for_broker(settings)
    except TimeoutError:
        supervisor.stop_all()
        raise
    from services.demo_data import publish_draft_signal

    try:
        asyncio.run(publish_draft_signal(settings))  # its draft waits in the review queue
    except BaseException:
        supervisor.stop_all()
        raise
    print(_banner(settings, demo.api_key) + official, flush=True)
    threading.Thread(target=_announce_when_up, args=(settings, started), daemon=True).start()
    return supervisor.run()


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


if __name__ == "__main__":
    sys.exit(main())
