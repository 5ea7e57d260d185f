"""Prometheus metrics: one prefix per service, fixed label sets, route templates only."""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class MetricsMiddleware:
    """Pure ASGI middleware that counts and times every HTTP request by route template.

    (Starlette's `BaseHTTPMiddleware` costs a task and a stream per request; this does not.)
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # the router puts the matched route in the scope: its template, never the raw path
            route = scope.get("route")
            template = str(getattr(route, "path_format", None) or getattr(route, "path", None)
                           or "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, template).observe(
                time.perf_counter() - start)


def instrument_app(app: FastAPI, service: str) -> None:
    """Count and time every request, and serve `/metrics`."""
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
