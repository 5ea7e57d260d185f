"""What every HTTP service does at its edge, before a handler runs (pure ASGI middleware,
installed by `shared.web.create_app`):

- `BodyLimit`: a body over the limit is refused with 413 before it is read (from its
  Content-Length, or once a chunked body passes the limit), so before auth too;
- `OpsExposure`: /metrics and the API docs only where the settings allow them;
- `SecurityHeaders`: nosniff and Referrer-Policy on every answer, a Content-Security-Policy
  (with frame-ancestors) and X-Frame-Options on every HTML page.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import problem_response
from shared.settings import Settings

# Pages load their scripts, styles and images from their own service only; inline styles
# are allowed (the small pages carry a <style> block), inline scripts are not.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
# Swagger UI and ReDoc start from an inline script (and ReDoc from a blob: worker).
DOCS_CSP = PAGE_CSP.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'") + \
    "; worker-src 'self' blob:"
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/static-offline-docs")
METRICS_PATH = "/metrics"

SettingsOf = Callable[[], Settings]
LimitOf = Callable[[str, Settings], int]


def _is_docs(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)


def docs_allowed(settings: Settings) -> bool:
    return settings.docs_enabled if settings.docs_enabled is not None \
        else settings.env != "prod"


def metrics_allowed(settings: Settings) -> bool:
    if settings.metrics_enabled is not None:
        return settings.metrics_enabled
    return settings.env != "prod" or bool(settings.metrics_token)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if _is_docs(scope["path"]) else PAGE_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                # links carry tokens (a provider's status link): never in a Referer
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", csp)
                    headers.setdefault("X-Frame-Options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class OpsExposure:
    """/docs, /redoc, /openapi.json: 404 unless `docs_allowed`. /metrics: 404 unless
    `metrics_allowed`, and with LOOKOUT_METRICS_TOKEN set, only with that bearer token."""

    def __init__(self, app: ASGIApp, settings: SettingsOf) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == METRICS_PATH or _is_docs(path)):
            settings = self.settings()
            if path == METRICS_PATH:
                allowed = metrics_allowed(settings)
                if allowed and settings.metrics_token:
                    given = dict(scope["headers"]).get(b"authorization", b"")
                    allowed = hmac.compare_digest(  # bytes: any header, never a TypeError
                        given, f"Bearer {settings.metrics_token}".encode())
            else:
                allowed = docs_allowed(settings)
            if not allowed:
                await problem_response(404, "Not Found", instance=path)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a body over `limit(path, settings)` bytes with 413 problem+json before the
    app reads it: at once from its Content-Length; a chunked body is read up to the limit
    and then replayed to the app. `on_refused(path)` is told (e.g. to count it)."""

    def __init__(self, app: ASGIApp, settings: SettingsOf, limit: LimitOf,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.settings = settings
        self.limit = limit
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"], self.settings())
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await self._too_large(scope, receive, send, limit)
                return
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        if self.on_refused is not None:
            self.on_refused(scope["path"])
        response = problem_response(413, "Content too large",
                                    f"The body must be at most {limit} bytes.",
                                    instance=scope["path"], headers={"Connection": "close"})
        await response(scope, receive, send)


def default_limit(_path: str, settings: Settings) -> int:
    return settings.max_body_bytes
