"""Drug-checking results: one, a batch (prepared outside the write lock, stored with one
query and one bulk insert), each with its outbox row."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from services.ingest.models import DrugCheck, OutboxMessage
from services.ingest.schemas import DrugCheckIn
from services.ingest.service.common import (
    PRODUCER,
    Caller,
    ItemOutcome,
    accepted,
    detected_substance,
    duplicate_or_conflict,
    hash_content,
    normalize_sold_as,
    resolve_location,
)
from shared.db import BulkInsert, RawJSON, bulk_insert, get_engine, utcnow
from shared.events import DrugCheckResultV1
from shared.group_commit import writer_for
from shared.ids import uuid7
from shared.outbox import outbox_row
from shared.partition_keys import drug_check_result_key
from shared.problems import ProblemError
from shared.topics import DRUGCHECK_RESULTS

_DRUG_CHECKS = cast(Table, DrugCheck.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)

def build_result_event(
    body: DrugCheckIn, site_id: uuid.UUID, result_id: uuid.UUID, event_id: uuid.UUID
) -> DrugCheckResultV1:
    region = resolve_location(body.location)
    detected = [detected_substance(s.name, s.method, s.confidence, s.percent)
                for s in body.substances]
    sold = normalize_sold_as(body.sold_as) if body.sold_as else None
    sold_sub = sold.substance if sold else None
    return DrugCheckResultV1(
        event_id=event_id, producer=PRODUCER, result_id=result_id, site_id=site_id,
        sample_id=body.sample_id, collected_at=body.collected_at, tested_at=body.tested_at,
        region_id=region.id, region_name=region.name, sold_as_raw=body.sold_as,
        sold_as_id=sold_sub.id if sold_sub else None,
        sold_as_class=str(sold_sub.cls) if sold_sub else None,
        form=body.form, methods=list(body.methods), substances=detected,
        strips=dict(body.strips), adverse_reaction=body.adverse_reaction,
        collection_site=body.collection_site, canary=body.canary,
    )


def submit_drug_check(
    session: Session, caller: Caller, body: DrugCheckIn
) -> tuple[DrugCheck, bool]:
    """Store a result and its outbox row; return (row, created). Same content again is a
    duplicate (the first row); other content under the same sample id is a 409."""
    content_hash = hash_content(body)
    existing = repository.drug_check_by_sample(session, caller.site_id, body.sample_id)
    if existing is not None:
        return _same_or_conflict(existing, content_hash), False
    result_id, event_id = uuid7(), uuid7()
    event = build_result_event(body, caller.site_id, result_id, event_id)
    payload = event.model_dump(mode="json")
    row = DrugCheck(
        id=result_id, event_id=event_id, site_id=caller.site_id, sample_id=body.sample_id,
        content_hash=content_hash, collected_at=body.collected_at, region_id=event.region_id,
        event=payload,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.add(outbox_row(OutboxMessage, DRUGCHECK_RESULTS,
                                   drug_check_result_key(event.region_id), event))
    except IntegrityError:
        # Another request stored the same sample id first.
        existing = repository.drug_check_by_sample(session, caller.site_id, body.sample_id)
        if existing is None:
            raise
        return _same_or_conflict(existing, content_hash), False
    return row, True


def _same_or_conflict(existing: DrugCheck, content_hash: str) -> DrugCheck:
    if not hmac.compare_digest(existing.content_hash, content_hash):
        raise ProblemError(
            409, "Conflict",
            f"sample_id {existing.sample_id!r} was already submitted with different content.",
            existing_id=str(existing.id),
        )
    return existing


def get_drug_check(session: Session, caller: Caller, result_id: uuid.UUID) -> DrugCheck:
    row = session.get(DrugCheck, result_id)
    if row is None or row.site_id != caller.site_id:
        raise ProblemError(404, "Not found", "No such result for this site.")
    return row



@dataclass
class PreparedCheck:
    """A validated result made ready to store (`prepare_drug_checks`): its content hash,
    ids and region, and its row and outbox row as the driver's parameters (`BulkInsert`),
    or why its location failed. All the CPU work, done before the write, outside the
    write lock."""

    body: DrugCheckIn
    content_hash: str
    result_id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    region_id: str | None = None
    row: Any = None
    message: Any = None
    location_errors: list[dict[str, str]] = field(default_factory=list)


# The columns of a new result and its outbox row; the time is set in the write (`late`), so
# that `received_at` follows the commits (GET /v1/submissions pages by it).
_ROW_COLUMNS = ("id", "event_id", "site_id", "sample_id", "content_hash", "collected_at",
                "region_id", "event")
_MESSAGE_COLUMNS = ("topic", "key", "payload")  # as shared.outbox.outbox_row


def _inserts(dialect: Dialect) -> tuple[BulkInsert, BulkInsert]:
    return (bulk_insert(dialect, _DRUG_CHECKS, _ROW_COLUMNS, ("received_at",)),
            bulk_insert(dialect, _OUTBOX, _MESSAGE_COLUMNS, ("created_at",)))


def prepare_drug_checks(caller: Caller, bodies: Sequence[DrugCheckIn | None],
                        dialect: Dialect) -> list[PreparedCheck | None]:
    """`dialect`: the database's (`get_engine(url).dialect`), for the rows' parameters."""
    rows, messages = _inserts(dialect)
    return [None if body is None else _prepare(caller, body, rows, messages)
            for body in bodies]


def _prepare(caller: Caller, body: DrugCheckIn, rows: BulkInsert,
             messages: BulkInsert) -> PreparedCheck:
    prepared = PreparedCheck(body, hash_content(body))
    result_id, event_id = uuid7(), uuid7()
    try:
        event = build_result_event(body, caller.site_id, result_id, event_id)
    except ProblemError as exc:
        prepared.location_errors = list(exc.extra.get("errors", []))
        return prepared
    payload = event.model_dump_json()
    prepared.result_id, prepared.event_id = result_id, event_id
    prepared.region_id = event.region_id
    prepared.row = rows.row({
        "id": result_id, "event_id": event_id, "site_id": caller.site_id,
        "sample_id": body.sample_id, "content_hash": prepared.content_hash,
        "collected_at": body.collected_at, "region_id": event.region_id,
        "event": RawJSON(payload)})
    prepared.message = messages.row({"topic": DRUGCHECK_RESULTS.name,
                                     "key": drug_check_result_key(event.region_id),
                                     "payload": payload})
    return prepared



def submit_drug_checks(
    session: Session, caller: Caller, bodies: Sequence[DrugCheckIn | None]
) -> list[ItemOutcome]:
    """Store a batch (None: an item that failed validation, left to the caller) with one
    query for the known sample ids and one bulk insert; the same rules as
    `submit_drug_check`."""
    prepared = prepare_drug_checks(caller, bodies, session.get_bind().dialect)
    return store_drug_checks(session, caller, prepared)


Known = dict[str, tuple[uuid.UUID, uuid.UUID, str, str]]  # sample id -> id, event, region, hash


def known_drug_checks(session: Session, caller: Caller,
                      items: Sequence[PreparedCheck | None]) -> Known:
    """The site's stored results among these items' sample ids."""
    sample_ids = sorted({p.body.sample_id for p in items if p is not None})
    return {sid: (rid, eid, region, found_hash) for sid, rid, eid, region, found_hash
            in repository.drug_check_keys(session, caller.site_id, sample_ids)}


def store_drug_checks(
    session: Session, caller: Caller, items: Sequence[PreparedCheck | None],
    known: Known | None = None,
) -> list[ItemOutcome]:
    """The write half of `submit_drug_checks`: each item is a duplicate, a conflict, an
    unknown location or new, in order (an item sees the ones before it). `known`: the
    result of `known_drug_checks` read earlier, outside this transaction (the group
    writer reads it before taking the write lock); a sample id stored since then by
    another writer fails the insert on the unique key, and the items are then stored one
    by one, reading inside the transaction."""
    known = dict(known_drug_checks(session, caller, items) if known is None else known)
    outcomes: list[ItemOutcome] = []
    rows: list[Any] = []
    messages: list[Any] = []
    for item in items:
        if item is None:
            outcomes.append(ItemOutcome("rejected", reason="validation"))
            continue
        sample_id = item.body.sample_id
        if sample_id in known:
            rid, eid, region, first_hash = known[sample_id]
            outcomes.append(duplicate_or_conflict(
                rid, eid, region, hmac.compare_digest(first_hash, item.content_hash),
                f"sample_id {sample_id!r}"))
            continue
        if item.result_id is None or item.event_id is None or item.region_id is None:
            outcomes.append(ItemOutcome("rejected", reason="location",
                                        errors=item.location_errors))
            continue
        rows.append(item.row)
        messages.append(item.message)
        known[sample_id] = (item.result_id, item.event_id, item.region_id, item.content_hash)
        outcomes.append(ItemOutcome("accepted", item.result_id, item.event_id, item.region_id))
    if not rows:
        return outcomes
    now = utcnow()
    row_insert, message_insert = _inserts(session.get_bind().dialect)
    try:
        with session.begin_nested():
            connection = session.connection()
            row_insert.execute(connection, rows, received_at=now)
            message_insert.execute(connection, messages, created_at=now)  # ids in order
    except IntegrityError:
        # A concurrent request stored one of these sample ids first: go one by one.
        return _submit_one_by_one(session, caller,
                                  [None if p is None else p.body for p in items])
    return outcomes


def _submit_one_by_one(
    session: Session, caller: Caller, bodies: Sequence[DrugCheckIn | None]
) -> list[ItemOutcome]:
    outcomes = []
    for body in bodies:
        if body is None:
            outcomes.append(ItemOutcome("rejected", reason="validation"))
            continue
        try:
            row, created = submit_drug_check(session, caller, body)
        except ProblemError as exc:
            reason = "conflict" if exc.status == 409 else "location"
            existing = exc.extra.get("existing_id")
            outcomes.append(ItemOutcome(
                "rejected", reason=reason,
                existing_id=uuid.UUID(existing) if existing else None,
                errors=list(exc.extra.get("errors", []))
                or [{"field": "", "message": exc.detail, "type": reason}]))
            continue
        outcomes.append(accepted(row) if created else ItemOutcome(
            "duplicate", row.id, row.event_id, row.region_id))
    return outcomes




async def submit_grouped(url: str, caller: Caller,
                         bodies: list[DrugCheckIn | None]) -> list[ItemOutcome]:
    """The HTTP hot path's store: prepared here (hashes, events: CPU work, outside any
    lock), then stored through the process's group commit (shared/group_commit.py),
    merged with the same site's other requests of the group (an item sees the ones before
    it)."""
    prepared = prepare_drug_checks(caller, bodies, get_engine(url).dialect)

    def lookup(session: Session, items: Sequence[Any]) -> Known:
        return known_drug_checks(session, caller, items)

    def store(session: Session, items: Sequence[Any], known: Known) -> list[ItemOutcome]:
        return store_drug_checks(session, caller, items, known)

    return await writer_for(url).store(prepared, store, ("results", caller), lookup)
