"""Prometheus metrics: one prefix per service, fixed label sets, route templates only."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "lookout_http_requests_total",
    "HTTP requests by service, method, route template and status code",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "lookout_http_request_duration_seconds",
    "HTTP request latency by service, method and route template",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
AGENT_MESSAGES = Counter(
    "lookout_agent_messages_total",
    "Stream messages handled by agent and outcome (ok, dead_lettered)",
    ["service", "agent", "outcome"],
)


def _route_template(request: Request) -> str:
    """The matched route's template (set by the router in the scope), never the raw path."""
    route = request.scope.get("route")
    return str(getattr(route, "path_format", None) or getattr(route, "path", None)
               or "unmatched")


def instrument_app(app: FastAPI, service: str) -> None:
    """Count and time every request, and serve `/metrics`."""

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_template(request)
            HTTP_REQUESTS.labels(service, request.method, route, str(status)).inc()
            HTTP_LATENCY.labels(service, request.method, route).observe(
                time.perf_counter() - start
            )

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
