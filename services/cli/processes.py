"""`lookout broker`, `topics`, `serve`, `worker`, `relay`: the long-running processes."""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import signal
import sys
from typing import Any

from shared.settings import Settings, get_settings


def cmd_topics(args: argparse.Namespace) -> int:
    created = wait_for_broker_and_topics(get_settings())
    print(f"topics created: {', '.join(created) or 'none (all exist)'}")
    return 0


def wait_for_broker_and_topics(settings: Settings, timeout: float = 30) -> list[str]:
    """Once the broker answers, the registered topics that were missing, created."""
    from shared.kafka import client_security, ensure_topics, wait_for_broker

    security = client_security(settings)

    async def go() -> list[str]:
        await wait_for_broker(settings.bootstrap_servers, timeout, security)
        return await ensure_topics(settings.bootstrap_servers, security,
                                   settings.kafka_replication_factor)

    return asyncio.run(go())


def cmd_broker(args: argparse.Namespace) -> int:
    from shared.broker import start_tansu

    settings = get_settings()
    if not settings.embedded_broker:
        print(f"LOOKOUT_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: nothing to embed")
        return 0
    port = args.port or settings.broker_port
    proc = start_tansu(settings.broker_host, port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run `finally`: stop Tansu too
    try:
        wait_for_broker_and_topics(settings.model_copy(update={"broker_port": port}))
        print(f"broker ready: Tansu at {settings.broker_host}:{port} (memory storage)",
              flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def tune_http_process(service: str) -> None:
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
    tune_http_process(service)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.stack import http_ports
    from shared.logging import configure_logging

    settings = get_settings()
    configure_logging(args.service)
    workers = settings.ingest_workers if args.service == "ingest" else 1
    app, port = f"services.{args.service}.api:app", http_ports(settings)[args.service]
    if workers > 1:
        from shared.serving import serve_workers

        return serve_workers(app, settings.http_host, port, workers,
                             setup=functools.partial(_http_worker_setup, args.service))
    tune_http_process(args.service)
    uvicorn.run(app, host=settings.http_host, port=port, log_config=None, access_log=False)
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from services.outboxes import OUTBOX_TABLES
    from shared.logging import configure_logging
    from shared.relay import run_relay

    settings = get_settings()
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

    settings = get_settings()
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
