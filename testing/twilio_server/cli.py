"""``python -m testing.twilio_server``: the fake standalone."""

from __future__ import annotations

import argparse
import os

import uvicorn

from testing.twilio_server.app import create_app
from testing.twilio_server.catalog import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testing.twilio_server.store import FailRule


def _parse_fail_rule(text: str) -> FailRule:
    """``SUFFIX[:CODE[:STATUS]]``, e.g. ``0003:30003`` or ``9999:30008:failed``."""
    parts = text.split(":")
    try:
        code = int(parts[1]) if len(parts) > 1 else 30003
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad error code in {text!r}") from exc
    status = parts[2] if len(parts) > 2 else "undelivered"
    if not parts[0] or len(parts) > 3 or status not in ("undelivered", "failed"):
        raise argparse.ArgumentTypeError(f"expected SUFFIX[:CODE[:undelivered|failed]]: {text!r}")
    return FailRule(parts[0], code, "failed" if status == "failed" else "undelivered")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Twilio Messages API server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument(
        "--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID", DEFAULT_ACCOUNT_SID)
    )
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", DEFAULT_AUTH_TOKEN)
    )
    parser.add_argument("--callback-delay", type=float, default=0.05)
    parser.add_argument(
        "--fail-rule",
        type=_parse_fail_rule,
        action="append",
        default=[],
        metavar="SUFFIX[:CODE[:STATUS]]",
        help="To numbers ending in SUFFIX end undelivered/failed with CODE (repeatable)",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    app = create_app(
        args.account_sid,
        args.auth_token,
        callback_delay=args.callback_delay,
        fail_rules=args.fail_rule,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
