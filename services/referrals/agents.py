"""Referrals agents: SMS requests, replies and STOPs in, options/details/follow-ups out (through
the outbox), provider notices, a timer for follow-ups, silence and the purge, and the
replica of the site keys that may refer (ingest's `sites.keys.v1`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.referrals import service
from services.referrals.app import app as app  # re-exported: `lookout worker referrals` runs it
from services.referrals.notify import ChannelNotifier, NoticeQueue, ProviderNotifier
from shared.db import session_scope, try_job_lock, utcnow
from shared.events import ContactStoppedV1, ReferralRequestedV1, SiteKeyChangedV1, SmsReceivedV1
from shared.settings import get_settings
from shared.streams import process_each
from shared.topics import CONTACT_STOPS, REFERRAL_REQUESTS, SITE_KEYS, SMS_INBOUND

log = logging.getLogger(__name__)
settings = get_settings()
# Injectable for tests: the clock and the provider notifier.
clock: Callable[[], datetime] = utcnow
notifier: ProviderNotifier = ChannelNotifier(settings)
notices = NoticeQueue()

requests_topic = app.topic(REFERRAL_REQUESTS.name, value_serializer="raw", key_serializer="raw",
                           partitions=REFERRAL_REQUESTS.partitions)
requests_dlq = app.topic(REFERRAL_REQUESTS.dlq, value_serializer="raw", key_serializer="raw",
                         partitions=REFERRAL_REQUESTS.partitions)
inbound_topic = app.topic(SMS_INBOUND.name, value_serializer="raw", key_serializer="raw",
                          partitions=SMS_INBOUND.partitions)
inbound_dlq = app.topic(SMS_INBOUND.dlq, value_serializer="raw", key_serializer="raw",
                        partitions=SMS_INBOUND.partitions)
stops_topic = app.topic(CONTACT_STOPS.name, value_serializer="raw", key_serializer="raw",
                        partitions=CONTACT_STOPS.partitions)
stops_dlq = app.topic(CONTACT_STOPS.dlq, value_serializer="raw", key_serializer="raw",
                      partitions=CONTACT_STOPS.partitions)
keys_topic = app.topic(SITE_KEYS.name, value_serializer="raw", key_serializer="raw",
                       partitions=SITE_KEYS.partitions)
keys_dlq = app.topic(SITE_KEYS.dlq, value_serializer="raw", key_serializer="raw",
                     partitions=SITE_KEYS.partitions)


def _request(event: ReferralRequestedV1) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        referral = service.handle_request(session, settings, event, clock())
        if referral is not None:
            log.info("referral %s: %s, %d options", referral.id, referral.status,
                     len(referral.options))


def run_hand_off(handoff: service.HandOff) -> str | None:
    """Claim the notice, notify the provider outside any transaction, then record it
    (second transaction); None: another worker had claimed it."""
    return service.notify_and_record(settings, notifier, handoff, clock)


def _reply(event: SmsReceivedV1) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        handoff = service.handle_reply(session, settings, event, clock())
    if handoff is not None:  # a slow provider must not hold the next replies
        notices.submit(run_hand_off, handoff)


def _stop(event: ContactStoppedV1) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        ended = service.handle_stop(session, event, clock())
    if ended:
        log.info("STOP: %d referral(s) of a contact stopped", ended)


def _site_key(event: SiteKeyChangedV1) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        row = service.apply_site_key(session, event)
        if row is not None:
            log.info("site key %s of site %s: %s", row.key_id, row.site_id,
                     "revoked" if row.revoked_at else "active")


def run_tick() -> dict[str, int]:
    """The timer's work; with several workers, one of them does it each round."""
    now = clock()
    with session_scope(settings.sqlalchemy_url) as session:
        if not try_job_lock(session, "referrals.tick"):
            return {}
        done = service.tick(session, settings, now)
        stuck = service.stuck_hand_offs(session, now)
    # Chosen, but the worker stopped before the notice was recorded. Sent after the lock is
    # let go, so the claim (not the lock) keeps a notice from going out twice.
    for handoff in stuck:
        run_hand_off(handoff)
    with session_scope(settings.sqlalchemy_url) as session:
        done["purged"] = service.purge(session, settings, now) if try_job_lock(
            session, "referrals.purge") else 0
    if any(done.values()):
        log.info("referrals tick: %s", done)
    return done


async def handle_request(event: ReferralRequestedV1) -> None:
    await asyncio.to_thread(_request, event)


async def handle_reply(event: SmsReceivedV1) -> None:
    await asyncio.to_thread(_reply, event)


async def handle_stop(event: ContactStoppedV1) -> None:
    await asyncio.to_thread(_stop, event)


async def handle_site_key(event: SiteKeyChangedV1) -> None:
    await asyncio.to_thread(_site_key, event)


@app.agent(requests_topic, concurrency=1)
async def requests(stream: Any) -> None:
    await process_each(stream, service="referrals", agent="requests",
                       parse=ReferralRequestedV1.model_validate_json, handle=handle_request,
                       dlq=requests_dlq)


@app.agent(inbound_topic, concurrency=1)
async def replies(stream: Any) -> None:
    await process_each(stream, service="referrals", agent="replies",
                       parse=SmsReceivedV1.model_validate_json, handle=handle_reply,
                       dlq=inbound_dlq)


@app.agent(stops_topic, concurrency=1)
async def stops(stream: Any) -> None:
    await process_each(stream, service="referrals", agent="stops",
                       parse=ContactStoppedV1.model_validate_json, handle=handle_stop,
                       dlq=stops_dlq)


@app.agent(keys_topic, concurrency=1)
async def site_keys(stream: Any) -> None:
    await process_each(stream, service="referrals", agent="site_keys",
                       parse=SiteKeyChangedV1.model_validate_json, handle=handle_site_key,
                       dlq=keys_dlq)


@app.timer(interval=settings.referrals_tick_seconds)
async def due_work() -> None:
    try:
        await asyncio.to_thread(run_tick)
    except Exception:
        log.exception("referrals tick failed; next tick retries")
