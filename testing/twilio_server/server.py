"""The fake on a background uvicorn thread (tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import uvicorn

from testing.twilio_server.app import FakeTwilio, create_app
from testing.twilio_server.catalog import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testing.twilio_server.store import FailRule


class FakeTwilioServer:
    """Runs the fake on ``host`` (loopback by default) in a background uvicorn thread.

    ``port=0`` picks a free port; ``.url`` is the value for ``client.api.base_url``.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_delay: float = 0.05,
        fail_rules: Iterable[FailRule] = (),
        log_level: str = "warning",
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.app = create_app(
            account_sid, auth_token, callback_delay=callback_delay, fail_rules=fail_rules
        )
        self.fake: FakeTwilio = self.app.state.twilio
        self._requested_port = port
        self._log_level = log_level
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeTwilioServer:
        if self._thread is not None:
            raise RuntimeError("FakeTwilioServer already started")
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # is TCP; with proto=0 Nagle + delayed ACK delay every response (docs/testing.md).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level=self._log_level, access_log=False, lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-twilio", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("fake Twilio server failed to start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Convenience pass-throughs to the in-memory state (thread-safe).

    def messages(self, to: str | None = None) -> list[dict[str, Any]]:
        return self.fake.messages(to)

    def message_count(self) -> int:
        return self.fake.message_count()

    def callbacks(self) -> list[dict[str, Any]]:
        return self.fake.callbacks()

    def stats(self) -> dict[str, int]:
        return self.fake.stats()

    def opt_out(self, number: str) -> None:
        self.fake.opt_out(number)

    def add_fault(self, status: int, count: int = 1, **kwargs: Any) -> None:
        self.fake.add_fault(status, count, **kwargs)

    def add_fail_rule(self, rule: FailRule) -> None:
        self.fake.add_fail_rule(rule)

    def reset(self) -> None:
        self.fake.reset()

    def twilio_client(self) -> Any:
        """A real ``twilio.rest.Client`` pointed at this server."""
        from twilio.rest import Client

        client = Client(self.account_sid, self.auth_token)
        client.api.base_url = self.url
        return client
