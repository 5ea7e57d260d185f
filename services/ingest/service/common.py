"""What every kind of submission shares: the caller, an item's outcome, locations coarsened
to regions, substance names normalized, content hashes."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from functools import lru_cache

from pydantic import BaseModel

from services.ingest.models import DrugCheck, OverdoseReport
from services.ingest.schemas import Location
from shared import regions, substances
from shared.events import DetectedSubstanceV1
from shared.problems import ProblemError

PRODUCER = "ingest"

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
def normalize_substance(name: str) -> substances.SubstanceMatch:
    return substances.normalize_substance(name)


@lru_cache(maxsize=16384)
def normalize_sold_as(name: str) -> substances.SubstanceMatch:
    return substances.normalize_sold_as(name)


@lru_cache(maxsize=16384)  # the event models are frozen: one instance can be shared
def detected_substance(name: str, method: str = "ftir", confidence: float | None = None,
              percent: float | None = None) -> DetectedSubstanceV1:
    match = normalize_substance(name)
    sub = match.substance
    return DetectedSubstanceV1(
        raw=name, substance_id=sub.id if sub else None, status=str(match.status),
        substance_class=str(sub.cls) if sub else None, risk=sub.risk if sub else None,
        method=method, confidence=confidence, percent=percent,
    )


def hash_content(body: BaseModel) -> str:
    # Defaults left out, so a new optional field does not change the hash of old content.
    canonical = json.dumps(body.model_dump(mode="json", exclude_defaults=True),
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def accepted(row: DrugCheck | OverdoseReport) -> ItemOutcome:
    return ItemOutcome("accepted", row.id, row.event_id, row.region_id)


def duplicate_or_conflict(existing_id: uuid.UUID, event_id: uuid.UUID, region_id: str,
                           same: bool, label: str) -> ItemOutcome:
    if same:
        return ItemOutcome("duplicate", existing_id, event_id, region_id)
    message = f"{label} was already submitted with different content"
    return ItemOutcome("rejected", reason="conflict", existing_id=existing_id,
                       errors=[{"field": "", "message": message, "type": "conflict"}])

