"""What Twilio's webhooks need: the signature check, status callbacks stored in group
commits, and an inbound SMS handled in its own unit of work."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from tenacity import retry, retry_if_exception_type, stop_after_attempt
from twilio.request_validator import RequestValidator

from services.alerts import contacts, inbound, repository, service
from services.alerts.keywords import parse as parse_keyword
from shared.db import session_scope
from shared.problems import ProblemError
from shared.settings import Settings


# An IntegrityError: an early row for one SID made at the same time; once more sees it.
@retry(retry=retry_if_exception_type(IntegrityError), stop=stop_after_attempt(2),
       reraise=True)
def record_statuses(url: str, items: list[tuple[str, str, str | None]]) -> list[str]:
    with session_scope(url) as session:
        return [service.record_status(session, *item) for item in items]


class StatusWriter:
    """Group commit for status callbacks: a callback is answered only once its status is
    committed (nothing answered is lost), but the callbacks that arrive while one batch is
    written (in a thread: the event loop keeps taking callbacks) share the next transaction.
    Under a fan-out's flood of callbacks this is one thread hop and one commit per batch
    instead of per callback."""

    MAX_BATCH = 200
    _writers: dict[str, StatusWriter] = {}

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.loop = loop
        self.waiting: list[tuple[tuple[str, str, str | None], asyncio.Future[str]]] = []
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, url: str) -> StatusWriter:
        loop = asyncio.get_running_loop()
        writer = cls._writers.get(url)
        if writer is None or writer.loop is not loop:  # e.g. a new test client's loop
            writer = cls._writers[url] = StatusWriter(url, loop)
        return writer

    async def record(self, sid: str, status: str, error_code: str | None) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting.append(((sid, status, error_code), future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.waiting:
            batch = self.waiting[:self.MAX_BATCH]
            del self.waiting[:self.MAX_BATCH]
            try:
                outcomes = await asyncio.to_thread(record_statuses, self.url,
                                                   [item for item, _f in batch])
            except Exception as exc:
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_item, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)




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

