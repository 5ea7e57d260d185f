"""A tiny local HTTP server that records JSON POSTs (a provider's webhook, in tests)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookServer:
    """Answers `status` (or each of `statuses` in turn); with `hold` set, a request waits
    until the event is set (a slow provider)."""

    def __init__(self, status: int = 200, statuses: list[int] | None = None,
                 hold: threading.Event | None = None) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = status
        self.statuses = list(statuses or [])
        self.hold = hold
        self.arrived = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.received.append({"path": self.path,
                                       "content_type": self.headers.get("Content-Type"),
                                       "json": json.loads(body or b"null"), "body": body,
                                       "headers": dict(self.headers)})
                outer.arrived.set()
                if outer.hold is not None:
                    outer.hold.wait(30)
                self.send_response(outer.statuses.pop(0) if outer.statuses else outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
