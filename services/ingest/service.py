"""Ingest logic: authenticate sites, normalize submissions, write them with their outbox row.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest.models import ApiKey, DrugCheck, OutboxMessage, Site
from services.ingest.schemas import DrugCheckIn, Location
from shared import regions, substances
from shared.crypto import hash_api_key, new_api_key
from shared.events import DetectedSubstanceV1, DrugCheckResultV1
from shared.outbox import outbox_row
from shared.problems import ProblemError
from shared.topics import DRUGCHECK_RESULTS

PRODUCER = "ingest"


@dataclass(frozen=True)
class Caller:
    site_id: uuid.UUID
    scopes: tuple[str, ...]


def authenticate(session: Session, api_key: str, scope: str) -> Caller:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(api_key)))
    if row is None or row.revoked_at is not None:
        raise ProblemError(401, "Unauthorized", "Unknown or revoked API key.",
                           headers={"WWW-Authenticate": "Bearer"})
    if scope not in row.scopes:
        raise ProblemError(403, "Forbidden", f"This API key lacks the {scope!r} scope.")
    return Caller(row.site_id, tuple(row.scopes))


def create_site(session: Session, name: str, scopes: list[str],
                api_key: str | None = None) -> tuple[Site, str]:
    """A new site and its first API key (returned in clear once, stored hashed)."""
    site = Site(name=name)
    session.add(site)
    session.flush()
    key = api_key or new_api_key()
    session.add(ApiKey(site_id=site.id, key_hash=hash_api_key(key), prefix=key[:8],
                       scopes=scopes))
    session.flush()
    return site, key


def resolve_location(location: Location) -> regions.Region:
    try:
        if location.postal_code:
            return regions.by_postal_code(location.postal_code)
        if location.city and location.state:
            return regions.by_city(location.city, location.state)
        assert location.lat is not None and location.lon is not None
        return regions.by_point(location.lat, location.lon)
    except regions.RegionNotFoundError as exc:
        raise ProblemError(
            422, "Unknown location", str(exc),
            errors=[{"field": "/location", "message": str(exc), "type": "region_not_found"}],
        ) from exc


def _content_hash(body: DrugCheckIn) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_result_event(
    body: DrugCheckIn, site_id: uuid.UUID, result_id: uuid.UUID, event_id: uuid.UUID
) -> DrugCheckResultV1:
    region = resolve_location(body.location)
    detected = []
    for s in body.substances:
        match = substances.normalize_substance(s.name)
        sub = match.substance
        detected.append(DetectedSubstanceV1(
            raw=s.name, substance_id=sub.id if sub else None, status=str(match.status),
            substance_class=str(sub.cls) if sub else None, risk=sub.risk if sub else None,
            method=s.method, confidence=s.confidence, percent=s.percent,
        ))
    sold = substances.normalize_sold_as(body.sold_as) if body.sold_as else None
    sold_sub = sold.substance if sold else None
    return DrugCheckResultV1(
        event_id=event_id, producer=PRODUCER, result_id=result_id, site_id=site_id,
        sample_id=body.sample_id, collected_at=body.collected_at, tested_at=body.tested_at,
        region_id=region.id, region_name=region.name, sold_as_raw=body.sold_as,
        sold_as_id=sold_sub.id if sold_sub else None,
        sold_as_class=str(sold_sub.cls) if sold_sub else None,
        form=body.form, methods=list(body.methods), substances=detected,
        strips=dict(body.strips), adverse_reaction=body.adverse_reaction,
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
    result_id, event_id = uuid.uuid4(), uuid.uuid4()
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
