"""The provider directory as matching sees it: every active service at each of its
locations, cached per process while the directory's version is unchanged, and the matches
for a referral."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals.geo import centroid, region_time_zone
from services.referrals.matching import DAYS, DirectoryIndex, Entry, Hours, Match, Request
from services.referrals.matching import match as match_entries
from shared.settings import Settings


def _hours(row: m.Schedule) -> Hours | None:
    def parse(text: str) -> tuple[Any, timedelta | None]:
        from datetime import time

        hh, mm = int(text[0:2]), int(text[3:5])
        rest = text[5:]
        if rest.startswith(":"):
            rest = rest[3:]
        offset = None
        if rest == "Z":
            offset = timedelta(0)
        elif rest:
            sign = -1 if rest[0] == "-" else 1
            digits = rest[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
        return time(hh, mm), offset

    if not row.opens_at or not row.closes_at:
        return None
    opens, offset = parse(row.opens_at)
    closes, _ = parse(row.closes_at)
    days = frozenset(d for d in (row.byday or "").split(",") if d in DAYS)
    return Hours(days, opens, closes, offset, row.valid_from, row.valid_to)


def load_entries(session: Session) -> list[Entry]:
    """Every active service at each of its locations, flattened for matching."""
    services = {s.id: s for s in session.scalars(
        select(m.Service).where(m.Service.status == "active"))}
    locations = {loc.id: loc for loc in session.scalars(select(m.Location))}
    by_sal: dict[str, list[Hours]] = defaultdict(list)
    by_service: dict[str, list[Hours]] = defaultdict(list)
    by_location: dict[str, list[Hours]] = defaultdict(list)
    for row in session.scalars(select(m.Schedule)):
        parsed = _hours(row)
        if parsed is None:
            continue
        if row.service_at_location_id:
            by_sal[row.service_at_location_id].append(parsed)
        elif row.service_id:
            by_service[row.service_id].append(parsed)
        elif row.location_id:
            by_location[row.location_id].append(parsed)
    languages: dict[str, set[str]] = defaultdict(set)
    for lang in session.scalars(select(m.Language)):
        code = (lang.code or (lang.name or "")[:2]).lower()
        languages[lang.service_id or ""].add(code)
        languages["loc:" + (lang.location_id or "")].add(code)
    capacity: dict[str, float] = defaultdict(float)
    for cap in session.scalars(select(m.ServiceCapacity)):
        capacity[cap.service_id] += cap.available
    free = {c.service_id for c in session.scalars(select(m.CostOption))
            if c.amount is not None and c.amount == 0}
    phones: dict[str, str] = {}
    for phone in session.scalars(select(m.Phone).order_by(m.Phone.id)):
        for key in (phone.service_at_location_id, phone.service_id,
                    "loc:" + (phone.location_id or ""), "org:" + (phone.organization_id or "")):
            if key and key not in ("loc:", "org:"):
                phones.setdefault(key, phone.number)
    entries = []
    for sal in session.scalars(select(m.ServiceAtLocation).order_by(m.ServiceAtLocation.id)):
        svc, loc = services.get(sal.service_id), locations.get(sal.location_id)
        if svc is None or loc is None:
            continue
        point = ((loc.latitude, loc.longitude) if loc.latitude is not None
                 and loc.longitude is not None else centroid(loc.region_id or ""))
        hours = by_sal.get(sal.id) or by_service.get(svc.id) or by_location.get(loc.id) or []
        address = ", ".join(p for p in (loc.address_1, loc.city) if p)
        entries.append(Entry(
            service_id=svc.id, service_at_location_id=sal.id, name=svc.name,
            service_types=frozenset(svc.service_types), point=point, hours=tuple(hours),
            time_zone=region_time_zone(loc.region_id, "") or None,
            languages=frozenset(languages[svc.id] | languages["loc:" + loc.id]),
            interpretation=bool(svc.interpretation_services),
            payment=frozenset(svc.payment_options) | ({"free"} if svc.id in free else set()),
            minimum_age=svc.minimum_age, maximum_age=svc.maximum_age,
            capacity_available=capacity[svc.id] if svc.id in capacity else None,
            accepting=svc.accepting, address=address,
            phone=phones.get(sal.id) or phones.get(svc.id) or phones.get("loc:" + loc.id)
            or phones.get("org:" + svc.organization_id, "")))
    return entries


_CACHE: dict[str, tuple[tuple[Any, ...], DirectoryIndex]] = {}


def directory_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever an import or an admin update touches the directory."""
    services = session.execute(select(func.count(), func.max(m.Service.updated_at))).one()
    capacity = session.execute(
        select(func.count(), func.max(m.ServiceCapacity.updated))).one()
    return (*services, *capacity)


def invalidate_directory() -> None:
    """Forget this process's cached directory (other processes see `directory_version`)."""
    _CACHE.clear()


def cached_entries(session: Session, key: str) -> DirectoryIndex:
    """`load_entries`, reused while the directory's version is unchanged (a large directory
    takes far longer to load than to match)."""
    version = directory_version(session)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    index = DirectoryIndex(load_entries(session))
    _CACHE[key] = (version, index)
    return index


def find_matches(session: Session, settings: Settings, referral: m.Referral, now: datetime,
                 exclude: tuple[str, ...] = ()) -> list[Match]:
    zone = region_time_zone(referral.region_id, "UTC")
    request = Request(
        service_types=frozenset(referral.service_types), now=now, time_zone=zone,
        origin=centroid(referral.region_id) if referral.region_id else None,
        language=referral.language, payment=referral.payment, age=referral.age,
        within_hours=settings.referrals_open_within_hours,
        max_distance_km=settings.referrals_max_distance_km, limit=3 + len(exclude))
    directory = cached_entries(session, str(session.get_bind().engine.url))
    if exclude:
        return match_entries([e for e in directory.entries if e.service_id not in exclude],
                             request)[:3]
    return match_entries(directory, request)[:3]

