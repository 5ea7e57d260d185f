"""The fake Twilio server, exercised through the real ``twilio`` SDK (loopback only)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from testing.twilio_server import FailRule, FakeTwilioServer, count_segments

ACCOUNT_SID = "AC" + "1234abcd" * 4
AUTH_TOKEN = "test-auth-token-0123456789"
SENDER = "+15005550006"
RECIPIENT = "+16045550123"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTwilioServer]:
    with FakeTwilioServer(
        ACCOUNT_SID,
        AUTH_TOKEN,
        callback_delay=0.02,
        fail_rules=[FailRule("0303", 30003), FailRule("0008", 30008, "failed")],
    ) as srv:
        yield srv


@pytest.fixture
def fake(server: FakeTwilioServer) -> Iterator[FakeTwilioServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(fake: FakeTwilioServer) -> Client:
    c = Client(ACCOUNT_SID, AUTH_TOKEN)
    c.api.base_url = fake.url
    return c


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class CallbackReceiver:
    """A tiny loopback HTTP server recording form-encoded POSTs."""

    def __init__(self, mode: str = "204") -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if mode == "204" else "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                received.append((self.path, dict(self.headers.items()), form))
                if mode == "204":  # HTTP/1.0, no body
                    self.send_response(204)
                    self.end_headers()
                elif mode == "chunked":  # HTTP/1.1 keep-alive, chunked body with a trailer
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"3\r\nok!\r\n0\r\nX-Trailer: 1\r\n\r\n")
                elif mode == "length":  # HTTP/1.1 keep-alive, Content-Length body
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                else:  # HTTP/1.1, body delimited by closing the connection
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(b"<Response/>")
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_create_fetch_and_list(client: Client, fake: FakeTwilioServer) -> None:
    msg = client.messages.create(to=RECIPIENT, from_=SENDER, body="Fentanyl alert: test")
    assert msg.sid is not None and re.fullmatch(r"SM[0-9a-f]{32}", msg.sid)
    assert msg.account_sid == ACCOUNT_SID
    assert (msg.to, msg.from_, msg.body) == (RECIPIENT, SENDER, "Fentanyl alert: test")
    assert msg.status == "queued"
    assert msg.direction == "outbound-api"
    assert msg.num_segments == "1"
    assert msg.api_version == "2010-04-01"
    assert msg.date_created is not None and msg.date_created.tzinfo is not None
    assert msg.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{msg.sid}.json"

    listed = client.messages.list(to=RECIPIENT)
    assert [m.sid for m in listed] == [msg.sid]
    assert client.messages.list(to="+16045550999") == []
    assert client.messages(msg.sid).fetch().body == "Fentanyl alert: test"

    [summary] = fake.messages()
    assert summary["sid"] == msg.sid and summary["num_segments"] == 1
    assert httpx.get(f"{fake.url}/_fake/messages").json()[0]["sid"] == msg.sid

    # Without a StatusCallback the status still progresses to delivered.
    wait_for(lambda: client.messages(msg.sid).fetch().status == "delivered")
    assert fake.callbacks() == []

    assert httpx.delete(f"{fake.url}/_fake/messages").json() == {"deleted": 1}
    assert fake.messages() == []


def test_sequential_requests_are_fast(client: Client) -> None:
    # Guards against Nagle + delayed-ACK stalls (~40 ms per response without TCP_NODELAY).
    started = time.monotonic()
    for _ in range(40):
        client.messages.create(to=RECIPIENT, from_=SENDER, body="x")
    assert time.monotonic() - started < 1.2


def test_list_pages_newest_first(client: Client) -> None:
    sids = [client.messages.create(to=RECIPIENT, from_=SENDER, body=f"m{i}").sid for i in range(5)]
    listed = client.messages.list(to=RECIPIENT, page_size=2)
    assert [m.sid for m in listed] == list(reversed(sids))


def test_unknown_message_is_404(client: Client) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages("SM" + "0" * 32).fetch()
    assert (info.value.status, info.value.code) == (404, 20404)


def test_wrong_auth_is_20003(fake: FakeTwilioServer) -> None:
    bad = Client(ACCOUNT_SID, "wrong-token")
    bad.api.base_url = fake.url
    with pytest.raises(TwilioRestException) as info:
        bad.messages.create(to=RECIPIENT, from_=SENDER, body="x")
    assert (info.value.status, info.value.code) == (401, 20003)
    assert fake.stats() == {"auth_failed": 1}
    raw = httpx.post(f"{fake.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    assert raw.status_code == 401
    assert set(raw.json()) == {"code", "message", "more_info", "status"}
    assert fake.messages() == []


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15005550001", 21211), ("+15005550009", 21614), ("+15005550004", 21610), ("12", 21211)],
)
def test_magic_numbers(client: Client, fake: FakeTwilioServer, to: str, code: int) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=to, from_=SENDER, body="x")
    assert (info.value.status, info.value.code) == (400, code)
    assert fake.stats() == {f"rejected.{code}": 1}


def test_opted_out_recipient_is_21610(client: Client, fake: FakeTwilioServer) -> None:
    response = httpx.post(f"{fake.url}/_fake/opt-out", json={"to": RECIPIENT})
    assert response.status_code == 200
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=RECIPIENT, from_=SENDER, body="x")
    assert info.value.code == 21610
    httpx.post(f"{fake.url}/_fake/opt-in", json={"to": RECIPIENT})
    assert client.messages.create(to=RECIPIENT, from_=SENDER, body="x").status == "queued"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": "", "from_": SENDER, "body": "x"}, 21604),
        ({"to": RECIPIENT, "body": "x"}, 21603),
        ({"to": RECIPIENT, "from_": SENDER}, 21602),
        ({"to": RECIPIENT, "from_": SENDER, "body": "x" * 1601}, 21617),
        ({"to": RECIPIENT, "from_": SENDER, "body": "x", "status_callback": "nope"}, 21609),
        (
            {"to": RECIPIENT, "from_": SENDER, "body": "x", "status_callback": "http://a_b/cb"},
            21609,
        ),
    ],
)
def test_missing_parameters(client: Client, kwargs: dict[str, str], code: int) -> None:
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(**kwargs)
    assert (info.value.status, info.value.code) == (400, code)


def test_messaging_service_is_accepted(client: Client) -> None:
    msg = client.messages.create(
        to=RECIPIENT, messaging_service_sid="MG" + "a" * 32, body="via service"
    )
    assert msg.status == "accepted"
    assert msg.num_segments == "0"
    assert msg.from_ is None
    wait_for(lambda: client.messages(msg.sid).fetch().status == "delivered")
    fetched = client.messages(msg.sid).fetch()
    assert fetched.num_segments == "1" and fetched.from_ == SENDER


def test_fault_429_then_success(client: Client, fake: FakeTwilioServer) -> None:
    response = httpx.post(f"{fake.url}/_fake/faults", json={"status": 429, "count": 1})
    assert response.status_code == 200
    with pytest.raises(TwilioRestException) as info:
        client.messages.create(to=RECIPIENT, from_=SENDER, body="retry me")
    assert (info.value.status, info.value.code) == (429, 20429)
    assert fake.messages() == []
    msg = client.messages.create(to=RECIPIENT, from_=SENDER, body="retry me")
    assert [m["sid"] for m in fake.messages()] == [msg.sid]
    assert httpx.get(f"{fake.url}/_fake/stats").json() == {"fault.429": 1, "accepted": 1}


def test_fault_503_count(client: Client, fake: FakeTwilioServer) -> None:
    fake.add_fault(503, 2, retry_after=1)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            client.messages.create(to=RECIPIENT, from_=SENDER, body="x")
        assert (info.value.status, info.value.code) == (503, 20503)
    client.messages.create(to=RECIPIENT, from_=SENDER, body="x")


def _callbacks_for(receiver: CallbackReceiver, sid: str) -> list[dict[str, str]]:
    return [form for _, _, form in receiver.requests if form.get("MessageSid") == sid]


def test_status_callbacks_signed_and_ordered(client: Client, fake: FakeTwilioServer) -> None:
    validator = RequestValidator(AUTH_TOKEN)
    with CallbackReceiver() as receiver:
        url = receiver.url("/twilio/status?tenant=bc")
        msg = client.messages.create(to=RECIPIENT, from_=SENDER, body="hello", status_callback=url)
        wait_for(lambda: len(_callbacks_for(receiver, msg.sid)) == 2)
        for path, headers, form in receiver.requests:
            assert path == "/twilio/status?tenant=bc"
            assert headers["Content-Type"] == "application/x-www-form-urlencoded"
            assert validator.validate(url, form, headers["X-Twilio-Signature"])
            assert not validator.validate(
                url, {**form, "To": "+1999"}, headers["X-Twilio-Signature"]
            )
            assert form["AccountSid"] == ACCOUNT_SID and form["ApiVersion"] == "2010-04-01"
            assert (form["To"], form["From"]) == (RECIPIENT, SENDER)
            assert form["SmsStatus"] == form["MessageStatus"] and "ErrorCode" not in form
    assert [f["MessageStatus"] for f in _callbacks_for(receiver, msg.sid)] == ["sent", "delivered"]
    assert client.messages(msg.sid).fetch().status == "delivered"
    attempts = [c for c in fake.callbacks() if c["sid"] == msg.sid]
    assert [(c["status"], c["http_status"]) for c in attempts] == [
        ("sent", 204),
        ("delivered", 204),
    ]


@pytest.mark.parametrize(
    ("to", "statuses", "code"),
    [("+16045550303", ["sent", "undelivered"], 30003), ("+16045550008", ["failed"], 30008)],
)
def test_fail_rules(client: Client, to: str, statuses: list[str], code: int) -> None:
    with CallbackReceiver() as receiver:
        msg = client.messages.create(
            to=to, from_=SENDER, body="x", status_callback=receiver.url("/s")
        )
        wait_for(lambda: len(_callbacks_for(receiver, msg.sid)) == len(statuses))
    forms = _callbacks_for(receiver, msg.sid)
    assert [f["MessageStatus"] for f in forms] == statuses
    assert forms[-1]["ErrorCode"] == str(code)
    fetched = client.messages(msg.sid).fetch()
    assert (fetched.status, fetched.error_code) == (statuses[-1], code)


@pytest.mark.parametrize("mode", ["chunked", "length", "close"])
def test_callback_response_framings(client: Client, fake: FakeTwilioServer, mode: str) -> None:
    with CallbackReceiver(mode) as receiver:
        url = receiver.url("/cb")
        sids = [
            client.messages.create(to=RECIPIENT, from_=SENDER, body="x", status_callback=url).sid
            for _ in range(3)
        ]
        wait_for(lambda: len(receiver.requests) == 6)
        # The fake records an attempt once it has read the answer, just after the receiver
        # counted the request.
        wait_for(lambda: len([c for c in fake.callbacks() if c["sid"] in sids]) == 6)
    attempts = [c for c in fake.callbacks() if c["sid"] in sids]
    assert len(attempts) == 6 and all(c.get("http_status") == 200 for c in attempts)


def test_callback_with_messaging_service_is_signed(client: Client) -> None:
    service = "MG" + "b" * 32
    with CallbackReceiver() as receiver:
        url = receiver.url("/svc")
        msg = client.messages.create(
            to=RECIPIENT, messaging_service_sid=service, body="x", status_callback=url
        )
        wait_for(lambda: len(_callbacks_for(receiver, msg.sid)) == 2)
    for _, headers, form in receiver.requests:
        assert form["MessagingServiceSid"] == service and form["From"] == SENDER
        assert RequestValidator(AUTH_TOKEN).validate(url, form, headers["X-Twilio-Signature"])


def test_unreachable_callback_is_recorded(client: Client, fake: FakeTwilioServer) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    msg = client.messages.create(
        to=RECIPIENT, from_=SENDER, body="x", status_callback=f"http://127.0.0.1:{port}/cb"
    )
    wait_for(lambda: len([c for c in fake.callbacks() if c["sid"] == msg.sid]) == 2)
    assert all("error" in c for c in fake.callbacks() if c["sid"] == msg.sid)
    assert client.messages(msg.sid).fetch().status == "delivered"


def test_fail_rule_via_control_endpoint(client: Client, fake: FakeTwilioServer) -> None:
    rule = {"suffix": "4242", "error_code": 30006}
    assert httpx.post(f"{fake.url}/_fake/fail-rules", json=rule).status_code == 200
    msg = client.messages.create(to="+16045554242", from_=SENDER, body="x")
    wait_for(lambda: client.messages(msg.sid).fetch().status == "undelivered")
    assert client.messages(msg.sid).fetch().error_code == 30006


def test_bad_control_request(fake: FakeTwilioServer) -> None:
    assert httpx.post(f"{fake.url}/_fake/faults", json={"count": 1}).status_code == 400
    assert httpx.get(f"{fake.url}/_fake/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("{" * 80, 1),  # extension characters cost two septets
        ("{" * 81, 2),
        ("é" * 160, 1),  # in the GSM-7 basic table
        ("ł" * 70, 1),  # not GSM-7 -> UCS-2
        ("ł" * 71, 2),
        ("a" * 68 + "😀", 1),  # emoji = 2 UTF-16 code units
        ("a" * 70 + "😀", 2),
    ],
)
def test_count_segments(body: str, segments: int) -> None:
    assert count_segments(body) == segments


def test_segments_through_api(client: Client) -> None:
    gsm = client.messages.create(to=RECIPIENT, from_=SENDER, body="x" * 161)
    emoji_body = "y" * 70 + "😀"
    assert len(emoji_body) == 71
    ucs2 = client.messages.create(to=RECIPIENT, from_=SENDER, body=emoji_body)
    assert (gsm.num_segments, ucs2.num_segments) == ("2", "2")


def test_cli_runs_standalone() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--port", str(port), "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN]
    proc = subprocess.Popen(
        [sys.executable, "-m", "testing.twilio_server", *args, "--log-level", "warning"],
        cwd=REPO_ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/_fake/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=15)
        c = Client(ACCOUNT_SID, AUTH_TOKEN)
        c.api.base_url = url
        assert c.messages.create(to=RECIPIENT, from_=SENDER, body="cli").status == "queued"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
