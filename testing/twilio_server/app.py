"""The fake's HTTP side: the Twilio routes, the control routes and the ASGI app."""

from __future__ import annotations

import base64
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testing.twilio_server.callbacks import StatusCallbacks
from testing.twilio_server.catalog import (
    API_VERSION,
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    MAGIC_FROM,
    MAGIC_TO,
    MAX_BODY_CHARS,
    MESSAGING_SERVICE_SENDER,
    PHONE_RE,
    PHONE_SEPARATORS,
    json_response,
    twilio_error,
    valid_callback_url,
)
from testing.twilio_server.segments import count_segments
from testing.twilio_server.store import FailRule, Message, MessageStore


@dataclass(eq=False)
class FakeTwilio(MessageStore):
    """One fake Twilio account (``app.state.twilio``): its state (``MessageStore``, whose
    mutators take ``lock`` so test code in another thread can use them while uvicorn
    serves), its request handlers, and its status callbacks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._auth_b64 = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        self._base = f"/{API_VERSION}/Accounts/{self.account_sid}"
        self.status_callbacks = StatusCallbacks(self)

    async def aclose(self) -> None:
        await self.status_callbacks.aclose()

    def _guard(self, request: Request) -> Response | None:
        """Injected faults, then HTTP Basic auth and the AccountSid in the path."""
        fault = self.take_fault()
        if fault is not None:
            headers = None
            if fault.retry_after is not None:
                headers = {"Retry-After": f"{fault.retry_after:g}"}
            with self.lock:
                self._stats[f"fault.{fault.status}"] += 1
            return twilio_error(fault.status, fault.code, fault.message, headers)
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "basic" and hmac.compare_digest(
            credentials.strip().encode(), self._auth_b64.encode()
        )
        if not ok or request.path_params.get("account_sid") != self.account_sid:
            with self.lock:
                self._stats["auth_failed"] += 1
            return twilio_error(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return None

    async def messages_collection(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        if request.method == "POST":
            return await self._create(request)
        return self._list(request)

    def _reject(self, code: int, message: str) -> Response:
        with self.lock:
            self._stats[f"rejected.{code}"] += 1
        return twilio_error(400, code, message)

    async def _create(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", errors="replace")
        form: dict[str, str] = {}
        media: list[str] = []
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key == "MediaUrl":
                media.append(value)
            else:
                form.setdefault(key, value)
        to = form.get("To", "").strip()
        from_ = form.get("From", "").strip() or None
        service = form.get("MessagingServiceSid", "").strip() or None
        body = form.get("Body", "")
        if not to:
            return self._reject(21604, "A 'To' phone number is required.")
        if from_ is None and service is None:
            return self._reject(21603, "A 'From' phone number is required.")
        if not body and not media:
            return self._reject(21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            return self._reject(
                21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if from_ is not None and from_ in MAGIC_FROM:
            code, text = MAGIC_FROM[from_]
            return self._reject(code, text.format(to=to, from_=from_))
        if to in MAGIC_TO:
            code, text = MAGIC_TO[to]
            return self._reject(code, text.format(to=to, from_=from_))
        address = to.split(":", 1)[1] if ":" in to else to  # e.g. whatsapp:+1...
        if not PHONE_RE.fullmatch(address.translate(PHONE_SEPARATORS)):
            return self._reject(21211, f"The 'To' number {to} is not a valid phone number.")
        callback = form.get("StatusCallback") or None
        if callback is not None and not valid_callback_url(callback):
            return self._reject(21609, f"The StatusCallback URL {callback} is not a valid URL.")
        if to in self._opted_out:
            return self._reject(21610, "Attempt to send to unsubscribed recipient")

        now = datetime.now(UTC)
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        msg = Message(
            sid=sid,
            to=to,
            from_=from_ or (MESSAGING_SERVICE_SENDER if service else None),
            body=body,
            status="accepted" if service else "queued",
            num_segments=count_segments(body),
            num_media=len(media),
            messaging_service_sid=service,
            status_callback=callback,
            date_created=now,
            date_updated=now,
            final=self.fail_rule_for(to),
            uri=f"{self._base}/Messages/{sid}.json",
        )
        with self.lock:
            self._messages[sid] = msg
            self._stats["accepted"] += 1
        resource = msg.resource(self.account_sid)
        self.status_callbacks.schedule(msg)
        return json_response(resource, 201)

    def _list(self, request: Request) -> Response:
        q = request.query_params
        to, from_ = q.get("To"), q.get("From")
        try:
            page_size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            return twilio_error(400, 20001, "Invalid paging parameter")
        with self.lock:
            matching = [
                m
                for m in reversed(self._messages.values())  # newest first, like Twilio
                if (to is None or m.to == to) and (from_ is None or m.from_ == from_)
            ]
        start = page * page_size
        chunk = matching[start : start + page_size]
        filters = {k: v for k, v in (("To", to), ("From", from_)) if v is not None}

        def page_uri(n: int) -> str:
            return f"{self._base}/Messages.json?" + urlencode(
                {**filters, "PageSize": page_size, "Page": n}
            )

        has_next = start + page_size < len(matching)
        payload = {
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            "messages": [m.resource(self.account_sid) for m in chunk],
            "next_page_uri": page_uri(page + 1) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": page_uri(page),
        }
        return json_response(payload)

    async def message_instance(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        sid = request.path_params["sid"]
        with self.lock:
            msg = self._messages.get(sid)
            if msg is not None and request.method == "DELETE":
                del self._messages[sid]
                return Response(status_code=204)
        if msg is None:
            return twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return json_response(msg.resource(self.account_sid))



    async def control(self, request: Request) -> Response:
        name, method = request.path_params["name"], request.method
        if method == "GET" and name == "health":
            return json_response({"ok": True, "account_sid": self.account_sid})
        if method == "GET" and name == "messages":
            return json_response(self.messages(request.query_params.get("to")))
        if method == "GET" and name == "callbacks":
            return json_response(self.callbacks())
        if method == "GET" and name == "stats":
            return json_response(self.stats())
        if method == "DELETE" and name == "messages":
            return json_response({"deleted": self.clear_messages()})
        if method == "DELETE" and name == "faults":
            self.clear_faults()
            return json_response({"ok": True})
        if method == "DELETE" and name == "fail-rules":
            self.clear_fail_rules()
            return json_response({"ok": True})
        if method == "POST" and name == "reset":
            self.reset()
            return json_response({"ok": True})
        if method != "POST" or name not in ("opt-out", "opt-in", "faults", "fail-rules"):
            return json_response(
                {"error": f"no such control endpoint: {method} /_fake/{name}"}, 404)
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise TypeError("expected a JSON object")
            if name in ("opt-out", "opt-in"):
                number = str(data["to"])
                (self.opt_out if name == "opt-out" else self.opt_in)(number)
            elif name == "faults":
                retry = data.get("retry_after")
                self.add_fault(
                    int(data["status"]),
                    int(data.get("count", 1)),
                    code=int(data["code"]) if "code" in data else None,
                    message=data.get("message"),
                    retry_after=float(retry) if retry is not None else None,
                )
            else:
                status = data.get("status", "undelivered")
                if status not in ("undelivered", "failed"):
                    raise ValueError("status must be 'undelivered' or 'failed'")
                rule = FailRule(str(data["suffix"]), int(data.get("error_code", 30003)), status)
                self.add_fail_rule(rule)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            return json_response({"error": f"bad request: {exc!r}"}, 400)
        return json_response({"ok": True})


def create_app(
    account_sid: str = DEFAULT_ACCOUNT_SID,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    *,
    callback_delay: float = 0.05,
    fail_rules: Iterable[FailRule] = (),
) -> Starlette:
    """Build the fake Twilio ASGI app; its state is ``app.state.twilio`` (a :class:`FakeTwilio`)."""
    fake = FakeTwilio(account_sid, auth_token, callback_delay, tuple(fail_rules))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await fake.aclose()

    base = f"/{API_VERSION}/Accounts/{{account_sid}}"
    routes = [
        Route(f"{base}/Messages.json", fake.messages_collection, methods=["GET", "POST"]),
        Route(f"{base}/Messages/{{sid}}.json", fake.message_instance, methods=["GET", "DELETE"]),
        Route("/_fake/{name}", fake.control, methods=["GET", "POST", "DELETE"]),
    ]
    app = _FakeApp(routes=routes, lifespan=lifespan)
    app.state.twilio = fake
    app.fast_path = f"{fake._base}/Messages.json"
    return app


class _FakeApp(Starlette):
    """Starlette, except that creating a message (the hot path of a fan-out benchmark, which
    runs on the same cores as the code under test) skips the middleware and the router."""

    fast_path = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and \
                scope["path"] == self.fast_path:
            fake: FakeTwilio = self.state.twilio
            scope["path_params"] = {"account_sid": fake.account_sid}
            response = await fake.messages_collection(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
