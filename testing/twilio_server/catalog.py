"""The fake Twilio's constants and error catalogue: limits, magic numbers, the error body."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.responses import Response

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"  # the fake server's default credential
#: Sender assigned to messages sent through a Messaging Service without ``From``.
MESSAGING_SERVICE_SENDER = "+15005550006"
MAX_BODY_CHARS = 1600
#: Concurrent status-callback POSTs.
CALLBACK_WORKERS = 16
CALLBACK_TIMEOUT = 5.0
#: How many status-callback attempts ``/_fake/callbacks`` remembers.
CALLBACK_LOG_SIZE = 100_000

DeliveryStatus = Literal["undelivered", "failed"]

MAGIC_TO: dict[str, tuple[int, str]] = {
    "+15005550001": (21211, "The 'To' number {to} is not a valid phone number."),
    "+15005550002": (
        21612,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: "
        "{from_} via SMS.",
    ),
    "+15005550003": (
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' "
        "number: {to}.",
    ),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number {to} is not a valid mobile number"),
}
MAGIC_FROM: dict[str, tuple[int, str]] = {
    "+15005550001": (
        21212,
        "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
        "sender ID.",
    ),
    "+15005550007": (
        21606,
        "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone "
        "number for this destination.",
    ),
    "+15005550008": (
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ),
}
FAULT_DEFAULTS: dict[int, tuple[int, str]] = {
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    502: (20502, "Bad Gateway"),
    503: (20503, "Service Unavailable"),
}
DELIVERY_ERRORS: dict[int, str] = {
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

# A permissive phone-number shape check: optional '+', 7-15 digits, common separators allowed.
PHONE_RE = re.compile(r"\+?\d{7,15}")
PHONE_SEPARATORS = str.maketrans("", "", " -().")
# Whitespace and control characters never belong in a URL.
UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")


def valid_callback_url(url: str) -> bool:
    """Twilio's StatusCallback rules: http(s), a hostname without underscores, <= 4000 chars."""
    if len(url) > 4000 or UNSAFE_URL_CHARS.search(url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "_" not in parts.netloc


def twilio_error(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Twilio's legacy REST error body (what the SDK turns into ``TwilioRestException``)."""
    payload = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Response(
        json.dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")
