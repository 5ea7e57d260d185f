"""Events -> the dashboard's read model (`services.dashboard.models`).

`apply_batch` applies a batch of Kafka records in one transaction. Each event is applied
once: its id goes into `dashboard_processed_events` in the same transaction, so a
redelivered or replayed event changes nothing. Each applied signal, alert change, result and
report also adds a row to `dashboard_changes` for the live stream.

Used by the worker (`services.dashboard.agents`) and by `lookout dashboard rebuild`
(`rebuild`), which empties the tables and replays the topics from their start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from services.dashboard import models
from services.dashboard.aggregates import Counts, county_of, state_of
from shared.db import Base, session_scope, utcnow
from shared.events import (
    AlertChangedV1,
    ContaminationSignalV1,
    DrugCheckResultV1,
    OverdoseReportV1,
    ReferralEventV1,
    SiteKeyChangedV1,
    SpikeSignalV1,
    signal_adapter,
)
from shared.faust_patches import fetched_end_offsets
from shared.kafka import client_security
from shared.settings import Settings
from shared.topics import (
    ALERT_EVENTS,
    DRUGCHECK_RESULTS,
    OVERDOSE_REPORTS,
    REFERRAL_EVENTS,
    SIGNALS,
    SITE_KEYS,
    Topic,
)

log = logging.getLogger(__name__)

TOPICS: tuple[Topic, ...] = (SIGNALS, DRUGCHECK_RESULTS, OVERDOSE_REPORTS, REFERRAL_EVENTS,
                             ALERT_EVENTS, SITE_KEYS)
# Delivery statuses that mean the message was handed to the SMS provider.
HANDED = ("queued", "sending", "sent", "delivered", "undelivered", "failed")
DECISIONS = {"approve": "approve", "merge_approve": "approve", "reject": "reject",
             "cancel": "cancel"}


@dataclass(frozen=True)
class Record:
    """One Kafka record: its topic, value and timestamp (the producer's create time)."""

    topic: str
    value: bytes
    timestamp: datetime


def record_time(timestamp_ms: int | None) -> datetime:
    return utcnow() if not timestamp_ms or timestamp_ms < 0 else \
        datetime.fromtimestamp(timestamp_ms / 1000, UTC)


_PARSERS: dict[str, Callable[[bytes], BaseModel]] = {
    SIGNALS.name: signal_adapter.validate_json,
    DRUGCHECK_RESULTS.name: DrugCheckResultV1.model_validate_json,
    OVERDOSE_REPORTS.name: OverdoseReportV1.model_validate_json,
    REFERRAL_EVENTS.name: ReferralEventV1.model_validate_json,
    ALERT_EVENTS.name: AlertChangedV1.model_validate_json,
    SITE_KEYS.name: SiteKeyChangedV1.model_validate_json,
}


def parse(topic: str, raw: bytes) -> BaseModel:
    """The event of a record; ValidationError/ValueError when it is not one (-> DLQ)."""
    if topic not in _PARSERS:
        raise ValueError(f"not a dashboard topic: {topic}")
    return _PARSERS[topic](raw)


def _regions(region_id: str, region_name: str) -> dict[str, str]:
    return {"region_id": region_id, "region_name": region_name,
            "county_id": county_of(region_id), "state_id": state_of(region_id)}


class Bulk:
    """Rows of the append-only tables gathered over a batch, inserted with one
    executemany per table at its end (the ORM's unit of work cost ~1 ms a row here)."""

    def __init__(self) -> None:
        self.rows: dict[type[Base], list[dict[str, Any]]] = {}
        self.counts = Counts()

    def add(self, model: type[Base], **row: Any) -> None:
        self.rows.setdefault(model, []).append(row)

    def change(self, kind: str, ref: uuid.UUID, region_id: str | None, **data: Any) -> None:
        payload = {"kind": kind, "id": str(ref), "region_id": region_id, **data}
        self.add(models.Change, kind=kind, ref=str(ref), region_id=region_id, at=utcnow(),
                 data=json.dumps(payload, default=str))

    def insert(self, session: Session) -> None:
        session.flush()
        for model, rows in self.rows.items():
            session.execute(insert(model), rows)
        self.rows.clear()
        self.counts.add_to(session)
        self.counts = Counts()


def _result(session: Session, bulk: Bulk, e: DrugCheckResultV1, published_at: datetime,
            changes: bool) -> None:
    bulk.add(
        models.Result, event_id=e.event_id, result_id=e.result_id, site_id=e.site_id,
        sample_id=e.sample_id, collected_at=e.collected_at, tested_at=e.tested_at,
        published_at=published_at, **_regions(e.region_id, e.region_name),
        sold_as_raw=e.sold_as_raw, sold_as_id=e.sold_as_id, sold_as_class=e.sold_as_class,
        form=e.form, methods=list(e.methods),
        substances=[s.model_dump() for s in e.substances], strips=dict(e.strips),
        adverse_reaction=e.adverse_reaction, collection_site=e.collection_site,
        canary=e.canary)
    bulk.counts.result(e)
    if changes:
        bulk.change("result", e.event_id, e.region_id, canary=e.canary,
                    site_id=str(e.site_id))


def _report(session: Session, bulk: Bulk, e: OverdoseReportV1, published_at: datetime,
            changes: bool) -> None:
    bulk.add(
        models.Report, event_id=e.event_id, report_id=e.report_id, site_id=e.site_id,
        source=e.source, occurred_at=e.occurred_at, published_at=published_at,
        **_regions(e.region_id, e.region_name), fatal=e.fatal,
        naloxone_doses=e.naloxone_doses,
        suspected_substance_ids=list(e.suspected_substance_ids), sold_as_id=e.sold_as_id)
    bulk.counts.report(e)
    if changes:
        bulk.change("report", e.event_id, e.region_id, fatal=e.fatal, source=e.source)


def _signal(session: Session, bulk: Bulk, e: ContaminationSignalV1 | SpikeSignalV1,
            published_at: datetime, changes: bool) -> None:
    row: dict[str, Any] = dict(
        event_id=e.event_id, kind=e.kind, severity=e.severity, occurred_at=e.occurred_at,
        published_at=published_at, **_regions(e.region_id, e.region_name),
        evidence_event_ids=[str(x) for x in e.evidence_event_ids], canary=e.canary,
        pattern="spike", substance_id=None, substance_name=None, sold_as_id=None,
        sold_as_name=None, site_count=None, sample_count=None, identified_by=[],
        window_start=None, window_end=None, observed=None, expected=None, upperbound=None,
        method=None, score=None)
    if isinstance(e, SpikeSignalV1):
        row.update(window_start=e.window_start, window_end=e.window_end, observed=e.observed,
                   expected=e.expected, upperbound=e.upperbound, method=e.method,
                   score=e.score)
    else:
        row.update(pattern=e.pattern, substance_id=e.substance_id,
                   substance_name=e.substance_name, sold_as_id=e.sold_as_id,
                   sold_as_name=e.sold_as_name, site_count=e.site_count,
                   sample_count=e.sample_count, identified_by=list(e.identified_by))
    bulk.add(models.Signal, **row)
    if changes:
        bulk.change("signal", e.event_id, e.region_id, severity=e.severity,
                    pattern=row["pattern"], region_name=e.region_name, canary=e.canary,
                    substance=row["substance_name"], occurred_at=e.occurred_at.isoformat())


def _alert(session: Session, bulk: Bulk, e: AlertChangedV1, published_at: datetime,
           changes: bool) -> None:
    bulk.add(models.AlertEvent, event_id=e.event_id, alert_id=e.alert_id, action=e.action,
             actor=e.actor, status=e.status, occurred_at=e.occurred_at,
             deliveries=dict(e.deliveries))
    row = session.get(models.Alert, e.alert_id)
    if row is None:
        row = models.Alert(alert_id=e.alert_id, updated_at=e.occurred_at,
                           created_at=e.created_at)
        session.add(row)
    handed = sum(n for status, n in e.deliveries.items() if status in HANDED)
    if handed and (row.first_sms_at is None or e.occurred_at < row.first_sms_at):
        row.first_sms_at = e.occurred_at
    if e.deliveries.get("delivered") and (row.first_delivered_at is None
                                          or e.occurred_at < row.first_delivered_at):
        row.first_delivered_at = e.occurred_at
    decision = DECISIONS.get(e.action) or ("approve" if e.action == "create" and e.approved_by
                                           else None)
    if decision and row.decided_at is None:
        row.decision, row.decided_by = decision, e.approved_by if decision == "approve" \
            and e.approved_by else e.actor
        row.decided_at = e.approved_at if decision == "approve" and e.approved_at \
            else e.occurred_at
    if e.review_reason:
        row.review_reason = e.review_reason
    if row.status is not None and e.occurred_at < row.updated_at:
        return  # an older state than the one we hold (events of one alert come in order)
    row.status, row.kind, row.severity = e.status, e.kind, e.severity
    row.region_id, row.region_name = e.region_id, e.region_name
    row.county_id, row.state_id = county_of(e.region_id), state_of(e.region_id)
    row.substance_id, row.texts, row.segments = e.substance_id, dict(e.texts), dict(e.segments)
    row.signal_event_ids = [str(x) for x in e.signal_event_ids]
    row.audience, row.deliveries = e.audience, dict(e.deliveries)
    row.created_at, row.approved_at, row.approved_by = e.created_at, e.approved_at, \
        e.approved_by
    row.expires_at, row.parent_id, row.canary = e.expires_at, e.parent_id, e.canary
    row.updated_at = e.occurred_at
    if changes:
        bulk.change("deliveries" if e.action == "deliveries" else "alert", e.alert_id,
                e.region_id, action=e.action, status=e.status, severity=e.severity,
                deliveries=dict(e.deliveries), audience=e.audience, canary=e.canary,
                actor=e.actor)


def _referral(session: Session, bulk: Bulk, e: ReferralEventV1, published_at: datetime,
              changes: bool) -> None:
    row = session.get(models.Referral, e.referral_id)
    if row is None:
        row = models.Referral(referral_id=e.referral_id, status=e.status, source=e.source,
                              updated_at=e.occurred_at, reached=[])
        session.add(row)
    if e.status not in row.reached:
        row.reached = [*row.reached, e.status]
    if e.status == "requested" or row.requested_at is None:
        row.requested_at = min(filter(None, (row.requested_at, e.occurred_at)))
    if e.status == "connected" and row.connected_at is None:
        row.connected_at = e.occurred_at
    row.region_id = e.region_id or row.region_id
    row.service_types = list(e.service_types) or row.service_types
    if e.occurred_at >= row.updated_at:
        row.status, row.updated_at = e.status, e.occurred_at
    if changes:
        bulk.change("referral", e.referral_id, e.region_id, status=e.status)


def _site_key(session: Session, bulk: Bulk, e: SiteKeyChangedV1, published_at: datetime,
              changes: bool) -> None:
    row = session.get(models.Site, e.site_id)
    if row is None:
        session.add(models.Site(site_id=e.site_id, name=e.site_name))
    else:
        row.name = e.site_name


def apply_event(session: Session, bulk: Bulk, topic: str, event: BaseModel,
                published_at: datetime, changes: bool = True) -> None:
    """Apply one event not applied before (`apply_batch` checks)."""
    bulk.add(models.ProcessedEvent, event_id=event.event_id,  # type: ignore[attr-defined]
             topic=topic, applied_at=utcnow())
    if isinstance(event, DrugCheckResultV1):
        _result(session, bulk, event, published_at, changes)
    elif isinstance(event, OverdoseReportV1):
        _report(session, bulk, event, published_at, changes)
    elif isinstance(event, ContaminationSignalV1 | SpikeSignalV1):
        _signal(session, bulk, event, published_at, changes)
    elif isinstance(event, AlertChangedV1):
        _alert(session, bulk, event, published_at, changes)
    elif isinstance(event, ReferralEventV1):
        _referral(session, bulk, event, published_at, changes)
    elif isinstance(event, SiteKeyChangedV1):
        _site_key(session, bulk, event, published_at, changes)


def apply_batch(url: str, batch: list[tuple[Record, BaseModel]], changes: bool = True) -> int:
    """Apply parsed records in one transaction, each event id once (against the ones
    applied before and within the batch); return how many were new."""
    with session_scope(url) as session:
        ids = [event.event_id for _record, event in batch]  # type: ignore[attr-defined]
        done = set(session.scalars(select(models.ProcessedEvent.event_id)
                                   .where(models.ProcessedEvent.event_id.in_(ids))))
        bulk = Bulk()
        applied = 0
        for record, event in batch:
            event_id = event.event_id  # type: ignore[attr-defined]
            if event_id in done:
                continue
            done.add(event_id)
            apply_event(session, bulk, record.topic, event, record.timestamp, changes)
            applied += 1
        bulk.insert(session)
        return applied


# ---- rebuild ----------------------------------------------------------------------------------

READ_MODEL = (models.ProcessedEvent, models.Result, models.Report, models.Signal,
              models.Alert, models.AlertEvent, models.Site, models.Referral, models.Region,
              models.ReportDay, models.SampleDay, models.FoundDay)


def clear(url: str) -> None:
    """Empty the read model (not the change log: live pages keep their place in it)."""
    with session_scope(url) as session:
        for model in READ_MODEL:
            session.execute(delete(model))


async def replay(settings: Settings, batch_size: int = 500) -> dict[str, int]:
    """Apply every topic from its first record up to its end now; return the counts per
    topic of records read. Records that do not parse are skipped (the worker has
    dead-lettered them already)."""
    security = client_security(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50, **security)
    await consumer.start()
    read: dict[str, int] = {t.name: 0 for t in TOPICS}
    try:
        tps = [TopicPartition(t.name, p) for t in TOPICS
               for p in sorted(consumer.partitions_for_topic(t.name)
                               or await _partitions(consumer, t.name))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        listed = await consumer.end_offsets(tps)
        ends = await fetched_end_offsets(settings.bootstrap_servers, listed, security)
        left = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while left:
            fetched = await consumer.getmany(*left, timeout_ms=500, max_records=batch_size)
            batch: list[tuple[Record, BaseModel]] = []
            for tp, records in fetched.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    read[tp.topic] += 1
                    try:
                        batch.append((Record(tp.topic, r.value or b"",
                                             record_time(r.timestamp)),
                                      parse(tp.topic, r.value or b"")))
                    except ValueError:
                        log.warning("rebuild: skipped a bad record %s@%d", tp, r.offset)
            if batch:
                await asyncio.to_thread(apply_batch, settings.sqlalchemy_url, batch, False)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return read


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def rebuild(settings: Settings) -> dict[str, int]:
    """Empty the read model and replay every topic from the start (`lookout dashboard
    rebuild`); a "rebuild" change tells open pages to reload."""
    clear(settings.sqlalchemy_url)
    read = asyncio.run(replay(settings))
    with session_scope(settings.sqlalchemy_url) as session:
        bulk = Bulk()
        bulk.change("rebuild", uuid.uuid4(), None, records=sum(read.values()))
        bulk.insert(session)
    return read
