"""What Twilio's webhooks need: the signature check, status callbacks stored in group
commits, and an inbound SMS handled in its own unit of work."""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from tenacity import retry, retry_if_exception_type, stop_after_attempt
from twilio.request_validator import RequestValidator

from services.alerts import contacts, inbound, repository
from services.alerts.keywords import parse as parse_keyword
from services.alerts.service import statuses
from shared.db import session_scope
from shared.group_commit import writer_for
from shared.problems import ProblemError
from shared.settings import Settings

# A status callback is answered only once its status is committed (nothing answered is
# lost); the callbacks that arrive while one group is written share the next transaction
# (shared/group_commit.py), at most STATUS_GROUP of them.
STATUS_GROUP = 200


async def record_status(url: str, sid: str, status: str, error_code: str | None) -> str:
    outcomes = await writer_for(url, STATUS_GROUP).store([(sid, status, error_code)],
                                                         store_statuses, "statuses")
    return str(outcomes[0])


# An IntegrityError: an early row for one SID made at the same time; once more sees it.
@retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(2),
       reraise=True)
def store_statuses(session: Session, items: Sequence[tuple[str, str, str | None]],
                   _looked_up: object = None) -> list[str]:
    with session.begin_nested():
        return [statuses.record_status(session, *item) for item in items]


def handle_inbound(settings: Settings, phone: str, body: str, sid: str) -> str:
    # Its own unit of work so that the reply is only sent for a committed change; a
    # MessageSid handled already (a retry, a replay) changes nothing and gets no reply.
    with session_scope(settings.sqlalchemy_url) as session:
        if sid and not inbound.first_delivery(session, sid):
            return ""
        reply = inbound.handle_inbound(session, settings, phone, body)
    if parse_keyword(body).kind == "stop":
        _wait_for_sends_in_flight(settings, phone)
    return reply


def _wait_for_sends_in_flight(settings: Settings, phone: str, within: float = 5.0) -> None:
    """A message claimed just before the STOP committed may still be on its way to the
    provider: answer the STOP only once it has gone, so that nothing is sent after the STOP
    is acknowledged (new claims already see `stopped`)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with session_scope(settings.sqlalchemy_url) as session:
            contact = contacts.find(session, settings, phone)
            if contact is None or not repository.sends_in_flight(session, contact.id):
                return
        time.sleep(0.05)


async def signed_form(request: Request, settings: Settings, path: str,
                       signature: str | None) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.form()).items()}
    if not settings.twilio_skip_signature_check:
        # Checked against the public URL Twilio was given, never one built from the Host
        # header (settings refuse an empty one outside dev and test).
        if settings.public_alerts_url:
            url = settings.public_alerts_url.rstrip("/") + path
        elif settings.env in ("dev", "test"):
            url = str(request.url)
        else:
            raise ProblemError(403, "Forbidden", "No public URL to check signatures against.")
        validator = RequestValidator(settings.twilio_auth_token)
        if not signature or not validator.validate(url, form, signature):
            raise ProblemError(403, "Forbidden", "Missing or invalid Twilio signature.")
    return form

