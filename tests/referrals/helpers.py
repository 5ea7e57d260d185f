"""Helpers for referrals tests: the sample directory, outbox reading, event builders, and
the real `lookout` processes of the end-to-end tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from services.referrals import models as m
from services.referrals.hsds import import_path
from shared.db import session_scope
from shared.events import ReferralRequestedV1, SmsReceivedV1
from tests.referrals.test_hsds import CSV_PACKAGE, JSON_SERVICES

PACIFIC = ZoneInfo("America/Los_Angeles")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=PACIFIC)
HARBOR_HOOK = "http://127.0.0.1:9/hook"  # replaced per test where a real server is used


def load_directory(url: str, *, webhook: str | None = HARBOR_HOOK) -> None:
    """The sample HSDS directory; the Harbor bupe clinic takes notices by webhook."""
    with session_scope(url) as session:
        import_path(session, CSV_PACKAGE)
        import_path(session, JSON_SERVICES)
        harbor = session.get(m.Service, "svc-harbor-bup")
        assert harbor is not None
        if webhook:
            harbor.notify_channel, harbor.notify_address = "webhook", webhook


def outbox(url: str, topic: str) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(m.OutboxMessage).where(m.OutboxMessage.topic == topic)
                               .order_by(m.OutboxMessage.id)).all()
        return [json.loads(r.payload) for r in rows]


def sms_bodies(url: str) -> list[str]:
    return [e["body"] for e in outbox(url, "sms.requests.v1")]


def statuses(url: str) -> list[str]:
    return [e["status"] for e in outbox(url, "referrals.events.v1")]


def requested(contact: uuid.UUID, text: str = "TREATMENT", region_id: str | None =
              "us/wa/king-county/98104", when: datetime = TUESDAY_10AM) -> ReferralRequestedV1:
    return ReferralRequestedV1(producer="alerts", requested_at=when, contact_ref=contact,
                               language="en", region_id=region_id, raw_text=text)


def reply(contact: uuid.UUID, body: str, when: datetime = TUESDAY_10AM) -> SmsReceivedV1:
    return SmsReceivedV1(producer="alerts", contact_ref=contact, body=body, received_at=when)


def wait_for(what: str, check: Callable[[], Any], within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
