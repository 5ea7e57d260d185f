"""The processes that make up a running Lookout, as commands (used by `lookout run`, the
end-to-end test and the docs)."""

from __future__ import annotations

import sys

from shared.settings import Settings

# name -> `lookout` arguments
PROCESSES: dict[str, list[str]] = {
    "ingest": ["serve", "ingest"],
    "relay": ["relay"],
    "detection": ["worker", "detection"],
    "alerts": ["serve", "alerts"],
    "alerts-worker": ["worker", "alerts"],
    "referrals": ["serve", "referrals"],
    "referrals-worker": ["worker", "referrals"],
    "dashboard": ["serve", "dashboard"],
    "dashboard-worker": ["worker", "dashboard"],
}


def command(name: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", *PROCESSES[name]]


def http_ports(settings: Settings) -> dict[str, int]:
    return {
        "ingest": settings.ingest_port,
        "alerts": settings.alerts_port,
        "referrals": settings.referrals_port,
        "dashboard": settings.dashboard_port,
    }


def metrics_ports(settings: Settings) -> dict[str, int]:
    return {
        "relay": settings.relay_metrics_port,
        "detection": settings.detection_metrics_port,
        "alerts-worker": settings.alerts_worker_metrics_port,
        "referrals-worker": settings.referrals_worker_metrics_port,
        "dashboard-worker": settings.dashboard_worker_metrics_port,
    }
