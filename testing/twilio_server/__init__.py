"""Fake Twilio Programmable Messaging API for tests, benchmarks and local development.

Speaks enough of Twilio's 2010-04-01 REST API (same paths, JSON shapes and error codes) that the
real ``twilio`` Python SDK can talk to it::

    with FakeTwilioServer() as server:
        client = Client(server.account_sid, server.auth_token)
        client.api.base_url = server.url          # or: client = server.twilio_client()
        client.messages.create(to="+16045550123", from_="+15005550006", body="hi")
        assert server.messages()[0]["body"] == "hi"

Twilio routes (HTTP Basic auth ``AccountSid:AuthToken``):

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form: To, From | MessagingServiceSid,
  Body | MediaUrl, StatusCallback) -> 201 Message resource
* ``GET  /2010-04-01/Accounts/{AccountSid}/Messages.json`` (To, From, Page, PageSize) -> page
* ``GET|DELETE /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``

Magic ``To`` numbers (as with Twilio test credentials): +15005550001 -> 21211,
+15005550002 -> 21612, +15005550003 -> 21408, +15005550004 -> 21610, +15005550009 -> 21614.
Magic ``From``: +15005550001 -> 21212, +15005550007 -> 21606, +15005550008 -> 21611.

Control endpoints (no auth), all JSON:

* ``GET /_fake/health``, ``GET /_fake/messages[?to=]``, ``DELETE /_fake/messages``
* ``GET /_fake/callbacks`` (recent status-callback attempts), ``GET /_fake/stats`` (counters)
* ``POST /_fake/opt-out`` / ``POST /_fake/opt-in`` ``{"to": "+1..."}`` (opted-out -> 21610)
* ``POST /_fake/faults`` ``{"status": 429|500|503, "count": N, "code"?: int,
  "retry_after"?: seconds}`` -> the next N Twilio API requests fail; ``DELETE /_fake/faults``
* ``POST /_fake/fail-rules`` ``{"suffix": "0003", "error_code": 30003,
  "status"?: "undelivered"|"failed"}``; ``DELETE /_fake/fail-rules``
* ``POST /_fake/reset`` (everything back to the state at construction)

Accepted messages progress ``queued`` (``accepted`` with a Messaging Service) -> ``sent`` ->
``delivered`` (or ``undelivered``/``failed`` per fail rule), one step per ``callback_delay``.
With a ``StatusCallback`` URL each step after acceptance is POSTed there, form-encoded and signed
with ``X-Twilio-Signature`` exactly as Twilio does (HMAC-SHA1 over URL + sorted params).

Run standalone: ``python -m testing.twilio_server --port 8010``.
"""

from testing.twilio_server.app import FakeTwilio, create_app
from testing.twilio_server.catalog import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testing.twilio_server.cli import main
from testing.twilio_server.segments import count_segments
from testing.twilio_server.server import FakeTwilioServer
from testing.twilio_server.store import FailRule

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "FailRule",
    "FakeTwilio",
    "FakeTwilioServer",
    "count_segments",
    "create_app",
    "main",
]
