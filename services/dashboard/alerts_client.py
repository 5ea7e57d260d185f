"""The alerts API as the dashboard calls it: every request carries a credential signed for
the official who acts (shared/officials.py); the alerts service takes the actor from it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.officials import Official, sign
from shared.settings import Settings

# Review actions: the dashboard's name -> (HTTP method, path after /v1/alerts/{id}).
ACTIONS = {
    "approve": ("POST", "/approve"),
    "edit": ("PATCH", ""),
    "reject": ("POST", "/reject"),
    "cancel": ("POST", "/cancel"),
    "update": ("POST", "/update"),
    "all-clear": ("POST", "/all-clear"),
}
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# Tests route the calls to an in-process alerts app (httpx.ASGITransport); None: the network.
transport: httpx.AsyncBaseTransport | None = None


def alerts_url(settings: Settings) -> str:
    return (settings.dashboard_alerts_url or settings.service_url(settings.alerts_port)
            ).rstrip("/")


def _headers(settings: Settings, official: Official) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(settings, official)}"}


async def request(settings: Settings, official: Official, method: str, path: str,
                  **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=alerts_url(settings), timeout=TIMEOUT,
                                 transport=transport) as client:
        return await client.request(method, path, headers=_headers(settings, official),
                                    **kwargs)


async def act(settings: Settings, official: Official, alert_id: uuid.UUID, action: str,
              body: dict[str, Any]) -> httpx.Response:
    method, tail = ACTIONS[action]
    return await request(settings, official, method, f"/v1/alerts/{alert_id}{tail}", json=body)


async def alert(settings: Settings, official: Official, alert_id: uuid.UUID) -> httpx.Response:
    return await request(settings, official, "GET", f"/v1/alerts/{alert_id}")


async def export_subscriber(settings: Settings, official: Official,
                            phone: str) -> httpx.Response:
    return await request(settings, official, "GET", "/v1/admin/subscribers/export",
                         params={"phone": phone})


async def erase_subscriber(settings: Settings, official: Official,
                           phone: str) -> httpx.Response:
    return await request(settings, official, "DELETE", "/v1/admin/subscribers",
                         params={"phone": phone})


def problem_detail(response: httpx.Response) -> str:
    """What a refusal of the alerts API says (its problem+json detail or title)."""
    try:
        body = response.json()
    except ValueError:
        return f"The alerts service answered {response.status_code}."
    return str(body.get("detail") or body.get("title") or response.status_code)
