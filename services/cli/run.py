"""`lookout run` (the whole system locally, supervised) and `lookout smoke`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time

import httpx

from services.cli.data import cmd_db_upgrade, seed_dashboard, seed_official
from services.cli.processes import wait_for_broker_and_topics
from shared.settings import REPO_ROOT, Settings, get_settings


def cmd_smoke(args: argparse.Namespace) -> int:
    from services.smoke import SmokeFailedError, run_smoke

    try:
        result = run_smoke(get_settings(), api_key=args.api_key, timeout=args.timeout)
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
    settings = get_settings()
    cmd_db_upgrade(args)
    demo = seed_demo(settings)
    seed_dashboard(settings)
    official = seed_official(settings)
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
            wait_for_broker_and_topics(settings)
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
        wait_for_broker_and_topics(settings)
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
