"""Ingest logic: authenticate sites, normalize submissions, write them with their outbox row.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import Table, and_, event, func, or_, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest.models import ApiKey, DrugCheck, OutboxMessage, OverdoseReport, Site
from services.ingest.schemas import DrugCheckIn, Location, OverdoseReportIn
from shared import regions, substances
from shared.crypto import hash_api_key, new_api_key
from shared.db import BulkInsert, RawJSON, bulk_insert, utcnow
from shared.events import (
    DetectedSubstanceV1,
    DrugCheckResultV1,
    OverdoseReportV1,
    SiteKeyChangedV1,
)
from shared.ids import uuid7
from shared.outbox import outbox_row
from shared.problems import ProblemError
from shared.topics import DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SITE_KEYS

PRODUCER = "ingest"


_DRUG_CHECKS = cast(Table, DrugCheck.__table__)
_OUTBOX = cast(Table, OutboxMessage.__table__)
COORDINATE_DECIMALS = 2  # ~1 km: points are coarsened to this before anything else


@dataclass(frozen=True)
class Caller:
    site_id: uuid.UUID
    scopes: tuple[str, ...]
    key_id: uuid.UUID | None = None


@dataclass
class ItemOutcome:
    """What happened to one submitted item (of a batch, a CSV, or a single POST)."""

    status: str  # accepted, duplicate, rejected
    id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    region_id: str | None = None
    reason: str | None = None  # rejected: validation, location, conflict
    errors: list[dict[str, str]] = field(default_factory=list)
    existing_id: uuid.UUID | None = None


# Valid keys seen recently, by hash: saves a query per request. A revocation or rotation in
# this process drops its entry at once; other processes see it within KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 2.0
_key_cache: dict[str, tuple[float, Caller]] = {}


def cached_caller(api_key: str, scope: str | None) -> Caller | None:
    """The caller behind an API key if this process checked the key recently, else None
    (then `authenticate` asks the database). Needs no session: the hot path's auth."""
    cached = _key_cache.get(hash_api_key(api_key))
    if cached is None or cached[0] <= time.monotonic():
        return None
    return _in_scope(cached[1], scope)


def _in_scope(caller: Caller, scope: str | None) -> Caller:
    if scope is not None and scope not in caller.scopes:
        raise ProblemError(403, "Forbidden", f"This API key lacks the {scope!r} scope.")
    return caller


def authenticate(session: Session, api_key: str, scope: str | None) -> Caller:
    """The caller behind an API key; `scope` None: any valid key will do."""
    key_hash = hash_api_key(api_key)
    cached = _key_cache.get(key_hash)
    if cached is not None and cached[0] > time.monotonic():
        caller = cached[1]
    else:
        row = session.execute(select(ApiKey.id, ApiKey.site_id, ApiKey.scopes)
                              .where(ApiKey.key_hash == key_hash,
                                     ApiKey.revoked_at.is_(None))).first()
        if row is None:
            _key_cache.pop(key_hash, None)
            raise ProblemError(401, "Unauthorized", "Unknown or revoked API key.",
                               headers={"WWW-Authenticate": "Bearer"})
        caller = Caller(row.site_id, tuple(row.scopes), row.id)
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[key_hash] = (time.monotonic() + KEY_CACHE_SECONDS, caller)
    return _in_scope(caller, scope)


def create_site(session: Session, name: str, scopes: list[str],
                api_key: str | None = None) -> tuple[Site, str]:
    """A new site and its first API key (returned in clear once, stored hashed)."""
    site = Site(name=name)
    try:
        with session.begin_nested():
            session.add(site)
            session.flush()
    except IntegrityError as exc:
        raise ProblemError(409, "Conflict", f"A site named {name!r} exists already.") from exc
    key = api_key or new_api_key()
    row = ApiKey(site_id=site.id, key_hash=hash_api_key(key), prefix=key[:8], scopes=scopes)
    session.add(row)
    session.flush()
    _announce_key(session, row, site.name)
    return site, key


@lru_cache(maxsize=8192)
def _resolve(postal_code: str | None, city: str | None, state: str | None,
             lat: float | None, lon: float | None) -> regions.Region:
    if postal_code:
        return regions.by_postal_code(postal_code)
    if city and state:
        return regions.by_city(city, state)
    assert lat is not None and lon is not None
    return regions.by_point(lat, lon)


def resolve_location(location: Location) -> regions.Region:
    """The region of a location. A point is rounded to ~1 km first and then dropped."""
    lat = None if location.lat is None else round(location.lat, COORDINATE_DECIMALS)
    lon = None if location.lon is None else round(location.lon, COORDINATE_DECIMALS)
    try:
        return _resolve(location.postal_code, location.city and location.city.lower(),
                        location.state and location.state.lower(), lat, lon)
    except regions.RegionNotFoundError as exc:
        raise ProblemError(
            422, "Unknown location", str(exc),
            errors=[{"field": "/location", "message": str(exc), "type": "region_not_found"}],
        ) from exc


@lru_cache(maxsize=16384)
def _normalize_substance(name: str) -> substances.SubstanceMatch:
    return substances.normalize_substance(name)


@lru_cache(maxsize=16384)
def _normalize_sold_as(name: str) -> substances.SubstanceMatch:
    return substances.normalize_sold_as(name)


@lru_cache(maxsize=16384)  # the event models are frozen: one instance can be shared
def _detected(name: str, method: str = "ftir", confidence: float | None = None,
              percent: float | None = None) -> DetectedSubstanceV1:
    match = _normalize_substance(name)
    sub = match.substance
    return DetectedSubstanceV1(
        raw=name, substance_id=sub.id if sub else None, status=str(match.status),
        substance_class=str(sub.cls) if sub else None, risk=sub.risk if sub else None,
        method=method, confidence=confidence, percent=percent,
    )


def _content_hash(body: BaseModel) -> str:
    # Defaults left out, so a new optional field does not change the hash of old content.
    canonical = json.dumps(body.model_dump(mode="json", exclude_defaults=True),
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_result_event(
    body: DrugCheckIn, site_id: uuid.UUID, result_id: uuid.UUID, event_id: uuid.UUID
) -> DrugCheckResultV1:
    region = resolve_location(body.location)
    detected = [_detected(s.name, s.method, s.confidence, s.percent) for s in body.substances]
    sold = _normalize_sold_as(body.sold_as) if body.sold_as else None
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
    content_hash = _content_hash(body)
    existing = _find(session, caller.site_id, body.sample_id)
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
            session.add(outbox_row(OutboxMessage, DRUGCHECK_RESULTS, event.region_id, event))
    except IntegrityError:
        # Another request stored the same sample id first.
        existing = _find(session, caller.site_id, body.sample_id)
        if existing is None:
            raise
        return _same_or_conflict(existing, content_hash), False
    return row, True


def _find(session: Session, site_id: uuid.UUID, sample_id: str) -> DrugCheck | None:
    return session.scalar(
        select(DrugCheck).where(DrugCheck.site_id == site_id, DrugCheck.sample_id == sample_id)
    )


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
    prepared = PreparedCheck(body, _content_hash(body))
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
    prepared.message = messages.row({"topic": DRUGCHECK_RESULTS.name, "key": event.region_id,
                                     "payload": payload})
    return prepared


def _chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _accepted(row: DrugCheck | OverdoseReport) -> ItemOutcome:
    return ItemOutcome("accepted", row.id, row.event_id, row.region_id)


def _duplicate_or_conflict(existing_id: uuid.UUID, event_id: uuid.UUID, region_id: str,
                           same: bool, label: str) -> ItemOutcome:
    if same:
        return ItemOutcome("duplicate", existing_id, event_id, region_id)
    message = f"{label} was already submitted with different content"
    return ItemOutcome("rejected", reason="conflict", existing_id=existing_id,
                       errors=[{"field": "", "message": message, "type": "conflict"}])


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
    known: Known = {}
    for chunk in _chunks(sample_ids):
        for sid, rid, eid, region, found_hash in session.connection().execute(
            select(DrugCheck.sample_id, DrugCheck.id, DrugCheck.event_id, DrugCheck.region_id,
                   DrugCheck.content_hash)
            .where(DrugCheck.site_id == caller.site_id, DrugCheck.sample_id.in_(chunk))
        ):
            known[sid] = (rid, eid, region, found_hash)
    return known


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
            outcomes.append(_duplicate_or_conflict(
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
        outcomes.append(_accepted(row) if created else ItemOutcome(
            "duplicate", row.id, row.event_id, row.region_id))
    return outcomes


# --- overdose reports -------------------------------------------------------------------


def build_report_event(body: OverdoseReportIn, site_id: uuid.UUID, report_id: uuid.UUID,
                       event_id: uuid.UUID) -> OverdoseReportV1:
    region = resolve_location(body.location)
    suspected = [_detected(name, method="other") for name in body.suspected_substances]
    ids = list(dict.fromkeys(s.substance_id for s in suspected if s.substance_id))
    sold = _normalize_sold_as(body.sold_as) if body.sold_as else None
    sold_sub = sold.substance if sold else None
    return OverdoseReportV1(
        event_id=event_id, producer=PRODUCER, report_id=report_id, source=body.source,
        occurred_at=body.occurred_at, region_id=region.id, region_name=region.name,
        fatal=body.fatal, naloxone_doses=body.naloxone_doses, suspected_substance_ids=ids,
        sold_as_id=sold_sub.id if sold_sub else None, site_id=site_id,
        sold_as_raw=body.sold_as, sold_as_class=str(sold_sub.cls) if sold_sub else None,
        suspected_substances=suspected,
    )


def submit_overdose_reports(
    session: Session, caller: Caller, bodies: Sequence[OverdoseReportIn | None],
    idempotency_keys: Sequence[str | None],
) -> list[ItemOutcome]:
    """Store reports with their outbox rows. A report with an idempotency key that was seen
    before is a duplicate (same content: the first id) or a conflict (other content)."""
    wanted = sorted({k for k in idempotency_keys if k})
    known: dict[str, tuple[uuid.UUID, uuid.UUID, str, str]] = {}
    for chunk in _chunks(wanted):
        for found_key, rid, eid, region, chash in session.execute(
            select(OverdoseReport.idempotency_key, OverdoseReport.id, OverdoseReport.event_id,
                   OverdoseReport.region_id, OverdoseReport.content_hash)
            .where(OverdoseReport.site_id == caller.site_id,
                   OverdoseReport.idempotency_key.in_(chunk))
        ):
            known[str(found_key)] = (rid, eid, region, chash)
    outcomes: list[ItemOutcome] = []
    new_rows: list[Any] = []
    for body, key in zip(bodies, idempotency_keys, strict=True):
        if body is None:
            outcomes.append(ItemOutcome("rejected", reason="validation"))
            continue
        chash = _content_hash(body)
        if key and key in known:
            rid, eid, region, first_hash = known[key]
            outcomes.append(_duplicate_or_conflict(
                rid, eid, region, hmac.compare_digest(first_hash, chash),
                f"Idempotency-Key {key!r}"))
            continue
        report_id, event_id = uuid7(), uuid7()
        try:
            event = build_report_event(body, caller.site_id, report_id, event_id)
        except ProblemError as exc:
            outcomes.append(ItemOutcome("rejected", reason="location",
                                        errors=list(exc.extra.get("errors", []))))
            continue
        row = OverdoseReport(
            id=report_id, event_id=event_id, site_id=caller.site_id, idempotency_key=key,
            content_hash=chash, occurred_at=body.occurred_at, region_id=event.region_id,
            event=event.model_dump(mode="json"), received_at=utcnow(),
        )
        new_rows += [row, outbox_row(OutboxMessage, OVERDOSE_REPORTS, event.region_id, event)]
        if key:
            known[key] = (row.id, row.event_id, row.region_id, chash)
        outcomes.append(_accepted(row))
    if new_rows:
        try:
            with session.begin_nested():
                session.add_all(new_rows)
                session.flush()
        except IntegrityError as exc:
            # Two requests with the same key raced; the loser retries and sees the winner.
            raise ProblemError(409, "Conflict", "A request with the same Idempotency-Key is "
                               "being processed; retry.") from exc
    return outcomes


def get_overdose_report(session: Session, caller: Caller,
                        report_id: uuid.UUID) -> OverdoseReport:
    row = session.get(OverdoseReport, report_id)
    if row is None or row.site_id != caller.site_id:
        raise ProblemError(404, "Not found", "No such report for this site.")
    return row


# --- the caller's own submissions --------------------------------------------------------


def parse_since(since: str | None) -> tuple[datetime, uuid.UUID] | None:
    """`since` is a time (ISO 8601 with a zone) or the `next_since` cursor of a page."""
    if not since:
        return None
    text, _, last_id = since.partition("~")
    try:
        when = datetime.fromisoformat(text.replace(" ", "+").replace("Z", "+00:00"))
        after = uuid.UUID(last_id) if last_id else uuid.UUID(int=(1 << 128) - 1)
    except ValueError as exc:
        raise _bad_since() from exc
    if when.tzinfo is None:
        raise _bad_since()
    return when, after


def _bad_since() -> ProblemError:
    message = "since must be a time with a zone (2026-01-31T12:00:00Z) or a next_since cursor"
    return ProblemError(422, "Validation failed", message,
                        errors=[{"field": "/since", "in": "query", "message": message,
                                 "type": "value_error"}])


def list_submissions(session: Session, caller: Caller, since: str | None,
                     limit: int) -> tuple[list[tuple[str, Any]], str | None]:
    """The caller's site's own results and reports received after `since`, oldest first."""
    cursor = parse_since(since)
    found: list[tuple[str, Any]] = []
    models: list[tuple[str, Any]] = []
    if "results" in caller.scopes:
        models.append(("drug_check", DrugCheck))
    if "reports" in caller.scopes:
        models.append(("overdose_report", OverdoseReport))
    for kind, model in models:
        query = select(model).where(model.site_id == caller.site_id)
        if cursor:
            when, after = cursor
            query = query.where(or_(model.received_at > when,
                                    and_(model.received_at == when, model.id > after)))
        rows = session.scalars(query.order_by(model.received_at, model.id).limit(limit + 1))
        found += [(kind, row) for row in rows]
    found.sort(key=lambda pair: (pair[1].received_at, pair[1].id))
    page, more = found[:limit], len(found) > limit
    next_since = None
    if more and page:
        last = page[-1][1]
        next_since = f"{last.received_at.isoformat()}~{last.id}"
    return page, next_since


# --- sites and keys (admin) --------------------------------------------------------------


def list_sites(session: Session) -> list[tuple[Site, int]]:
    active = (select(ApiKey.site_id, func.count().label("n"))
              .where(ApiKey.revoked_at.is_(None)).group_by(ApiKey.site_id).subquery())
    rows = session.execute(
        select(Site, func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.site_id == Site.id).order_by(Site.name)
    ).all()
    return [(site, int(n)) for site, n in rows]


def _site_or_404(session: Session, site_id: uuid.UUID) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise ProblemError(404, "Not found", "No such site.")
    return site


def list_keys(session: Session, site_id: uuid.UUID) -> list[ApiKey]:
    _site_or_404(session, site_id)
    return list(session.scalars(select(ApiKey).where(ApiKey.site_id == site_id)
                                .order_by(ApiKey.created_at)))


def add_key(session: Session, site_id: uuid.UUID, scopes: list[str]) -> tuple[ApiKey, str]:
    site = _site_or_404(session, site_id)
    key = new_api_key()
    row = ApiKey(site_id=site_id, key_hash=hash_api_key(key), prefix=key[:8], scopes=scopes,
                 created_at=utcnow())
    session.add(row)
    session.flush()
    _announce_key(session, row, site.name)
    return row, key


def _forget_key(session: Session, key_hash: str) -> None:
    """Drop a revoked key from this process's cache now and again once the revocation is
    committed: a request checked in between would have cached it from the old row."""
    _key_cache.pop(key_hash, None)
    event.listen(session, "after_commit", lambda _s: _key_cache.pop(key_hash, None),
                 once=True)


def _key_or_404(session: Session, site_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or row.site_id != site_id:
        raise ProblemError(404, "Not found", "No such key for this site.")
    return row


def revoke_key(session: Session, site_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = _key_or_404(session, site_id, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        _announce_key(session, row, _site_or_404(session, site_id).name)
    _forget_key(session, row.key_hash)
    session.flush()
    return row


def rotate_key(session: Session, site_id: uuid.UUID,
               key_id: uuid.UUID) -> tuple[ApiKey, str]:
    """A new key with the same scopes; the old one is revoked at once."""
    old = _key_or_404(session, site_id, key_id)
    if old.revoked_at is not None:
        raise ProblemError(409, "Conflict", "That key is already revoked; add a new key.")
    old.revoked_at = utcnow()
    _announce_key(session, old, _site_or_404(session, site_id).name)
    _forget_key(session, old.key_hash)
    return add_key(session, site_id, list(old.scopes))


# Scopes served by other services: keys holding one are announced on `sites.keys.v1` (in the
# change's transaction, through the outbox) so those services can check them in a replica
# of their own. Keys for ingest alone are not announced: no one else needs them.
ANNOUNCED_SCOPES = frozenset({"referrals"})


def _announce_key(session: Session, row: ApiKey, site_name: str) -> None:
    if not ANNOUNCED_SCOPES.intersection(row.scopes):
        return
    event = SiteKeyChangedV1(
        producer=PRODUCER, key_id=row.id, site_id=row.site_id, site_name=site_name,
        key_hash=row.key_hash, scopes=list(row.scopes), created_at=row.created_at,
        revoked_at=row.revoked_at, occurred_at=utcnow())
    session.add(outbox_row(OutboxMessage, SITE_KEYS, str(row.id), event))
