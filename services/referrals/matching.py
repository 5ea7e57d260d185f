"""Matching: a pure function from directory entries and a request to ranked, explained matches.

Filters: requested service type, open now or within N hours (HSDS schedules in the
provider's or the request region's time zone), language, payment, age, capacity and
distance from the person's region centroid. Ranking: distance, then how soon it is open,
then spare capacity. Every match lists why it matched; every rejection says why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from services.referrals.geo import distance_km

# Our service types (the list) and the codes accepted for each in HSDS attributes:
# our own slug, SAMHSA FindTreatment.gov locator codes, and common names.
SERVICE_TYPES: dict[str, tuple[str, ...]] = {
    "buprenorphine": ("buprenorphine", "BU", "BUM", "BMO", "BUP", "BWN", "BWON"),
    "methadone": ("methadone", "OTP", "MM", "METH", "MMW", "DM"),
    "naltrexone": ("naltrexone", "NU", "NXN", "VTRL"),
    "withdrawal_management": ("withdrawal_management", "DT", "detox", "HID", "RD"),
    "residential": ("residential", "RES", "RS", "RL"),
    "outpatient": ("outpatient", "OP", "OIT", "ODT", "ORT", "OMB"),
    "syringe_services": ("syringe_services", "SSP", "syringe"),
    "naloxone": ("naloxone", "NAL", "NALOXONE"),
    "drug_checking": ("drug_checking", "DC", "drug checking"),
    "mental_health": ("mental_health", "MH", "MHT"),
    "peer_support": ("peer_support", "PEER", "peer"),
    "housing": ("housing", "HOUS", "TH"),
}
# What "treatment" (the bare SMS keyword) asks for.
TREATMENT = ("buprenorphine", "methadone", "naltrexone", "withdrawal_management",
             "residential", "outpatient")

# Payment options and the codes accepted for each (SAMHSA: MD Medicaid, SF sliding fee,
# SI/CASH self-pay, NP/FREE no payment accepted: free).
PAYMENT_OPTIONS: dict[str, tuple[str, ...]] = {
    "medicaid": ("medicaid", "MD"),
    "sliding_fee": ("sliding_fee", "SF"),
    "self_pay": ("self_pay", "SI", "CASH"),
    "free": ("free", "NP", "PA"),
    "private_insurance": ("private_insurance", "PI"),
}
# A request's payment -> options that satisfy it.
PAYMENT_ACCEPTS: dict[str, frozenset[str]] = {
    "medicaid": frozenset({"medicaid", "free"}),
    "uninsured": frozenset({"free", "sliding_fee", "self_pay"}),
    "sliding_fee": frozenset({"sliding_fee", "free"}),
    "private_insurance": frozenset({"private_insurance", "free"}),
}
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def code_to_type(code: str) -> str | None:
    c = code.strip().lower()
    for slug, codes in SERVICE_TYPES.items():
        if c in (x.lower() for x in codes):
            return slug
    return None


def code_to_payment(code: str) -> str | None:
    c = code.strip().lower()
    for slug, codes in PAYMENT_OPTIONS.items():
        if c in (x.lower() for x in codes):
            return slug
    return None


@dataclass(frozen=True)
class Hours:
    """One HSDS schedule row, parsed: weekly on `days` (empty: every day) opens..closes."""

    days: frozenset[str]
    opens: time
    closes: time
    utc_offset: timedelta | None = None  # from "09:00-08:00"; None: the zone applies
    valid_from: date | None = None
    valid_to: date | None = None


@dataclass(frozen=True)
class Entry:
    """A service at a location, flattened for matching."""

    service_id: str
    service_at_location_id: str
    name: str
    service_types: frozenset[str]
    point: tuple[float, float] | None
    hours: tuple[Hours, ...] = ()
    time_zone: str | None = None
    languages: frozenset[str] = frozenset()
    interpretation: bool = False
    payment: frozenset[str] = frozenset()
    minimum_age: int | None = None
    maximum_age: int | None = None
    capacity_available: float | None = None
    accepting: bool = True
    address: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Request:
    service_types: frozenset[str]
    now: datetime
    time_zone: str
    origin: tuple[float, float] | None
    language: str = "en"
    payment: str | None = None
    age: int | None = None
    within_hours: float = 2.0
    max_distance_km: float = 40.0
    limit: int = 3


@dataclass(frozen=True)
class Match:
    entry: Entry
    distance_km: float | None
    opens_in_minutes: int  # 0: open now
    closes_at: datetime | None  # when the current or next opening ends (local); None: 24 h
    reasons: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Rejection:
    entry: Entry
    reason: str


def _zone(name: str | None, fallback: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or fallback)
    except (KeyError, ValueError):
        return ZoneInfo(fallback)


def _openings(hours: Hours, local_now: datetime, horizon: timedelta,
              tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """Opening intervals (start, end) of one schedule that overlap [now - 1 day, horizon]."""
    out = []
    tzinfo: ZoneInfo | timezone = timezone(hours.utc_offset) if hours.utc_offset is not None \
        else tz
    now = local_now.astimezone(tzinfo)
    days = math.ceil(horizon.total_seconds() / 86400) + 1
    for offset in range(-1, days + 1):
        day = (now + timedelta(days=offset)).date()
        if hours.days and DAYS[day.weekday()] not in hours.days:
            continue
        if hours.valid_from and day < hours.valid_from:
            continue
        if hours.valid_to and day > hours.valid_to:
            continue
        start = datetime.combine(day, hours.opens, tzinfo)
        end = datetime.combine(day, hours.closes, tzinfo)
        if hours.closes == time(23, 59):
            end += timedelta(minutes=1)  # HSDS convention for "open until midnight / 24 h"
        if end <= start:
            end += timedelta(days=1)  # overnight
        out.append((start, end))
    return out


def next_open(entry: Entry, now: datetime, default_zone: str,
              within: timedelta) -> tuple[int, datetime] | None:
    """(minutes until open, 0 if open now; when that opening ends) or None."""
    tz = _zone(entry.time_zone, default_zone)
    best: tuple[int, datetime] | None = None
    for hours in entry.hours:
        for start, end in _openings(hours, now, within, tz):
            if start <= now < end:
                candidate = (0, end)
            elif now < start <= now + within:
                candidate = (math.ceil((start - now).total_seconds() / 60), end)
            else:
                continue
            if best is None or candidate[0] < best[0] or (
                    candidate[0] == best[0] and candidate[1] > best[1]):
                best = candidate
    if best is not None and best[0] == 0:
        # Adjacent openings (e.g. a 24/7 service's days) extend the closing time.
        end = best[1]
        for _ in range(8):
            later = [e for h in entry.hours for s, e in _openings(h, now, within, tz)
                     if s <= end < e]
            if not later:
                break
            end = max(later)
        best = (0, end)
    return best


def evaluate(entry: Entry, request: Request) -> Match | Rejection:
    reasons: list[str] = []
    wanted = entry.service_types & request.service_types
    if not wanted:
        return Rejection(entry, "does not offer the requested service")
    reasons.append("offers " + ", ".join(sorted(wanted)).replace("_", " "))
    if not entry.accepting:
        return Rejection(entry, "not taking referrals right now")
    if entry.capacity_available is not None:
        if entry.capacity_available <= 0:
            return Rejection(entry, "full (no capacity available)")
        places = "place" if entry.capacity_available == 1 else "places"
        reasons.append(f"{entry.capacity_available:g} {places} available")
    lang = request.language.lower()
    if lang in entry.languages or (not entry.languages and lang == "en"):
        reasons.append(f"speaks {lang}")
    elif entry.interpretation:
        reasons.append(f"interpretation for {lang}")
    else:
        return Rejection(entry, f"does not serve in language {lang!r}")
    if request.payment:
        ok = PAYMENT_ACCEPTS.get(request.payment, frozenset({request.payment}))
        takes = entry.payment & ok
        if not takes:
            return Rejection(entry, f"does not take {request.payment.replace('_', ' ')}")
        reasons.append("takes " + ", ".join(sorted(takes)).replace("_", " "))
    if request.age is not None:
        if entry.minimum_age is not None and request.age < entry.minimum_age:
            return Rejection(entry, f"minimum age {entry.minimum_age}")
        if entry.maximum_age is not None and request.age > entry.maximum_age:
            return Rejection(entry, f"maximum age {entry.maximum_age}")
        if entry.minimum_age is not None or entry.maximum_age is not None:
            reasons.append(f"age {request.age} eligible")
    distance: float | None = None
    if request.origin is not None:
        if entry.point is None:
            return Rejection(entry, "location unknown")
        distance = distance_km(request.origin, entry.point)
        if distance > request.max_distance_km:
            return Rejection(entry, f"too far ({distance:.0f} km > "
                                    f"{request.max_distance_km:g} km)")
        reasons.append(f"{distance:.1f} km away")
    if not entry.hours:
        return Rejection(entry, "opening hours unknown")
    opening = next_open(entry, request.now, request.time_zone,
                        timedelta(hours=request.within_hours))
    if opening is None:
        return Rejection(entry, f"closed now and not open within {request.within_hours:g} h")
    minutes, closes = opening
    tz = _zone(entry.time_zone, request.time_zone)
    if minutes == 0 and closes - request.now >= timedelta(hours=24):
        reasons.append("open now, 24 hours")
        return Match(entry, distance, 0, None, tuple(reasons))
    if minutes == 0:
        reasons.append(f"open now until {closes.astimezone(tz):%H:%M}")
    else:
        reasons.append(f"opens in {minutes} min")
    return Match(entry, distance, minutes, closes.astimezone(tz), tuple(reasons))


def rank_key(m: Match) -> tuple[float, int, float]:
    # Distance in whole kilometres first (a few hundred metres should not beat "open now").
    dist = math.floor(m.distance_km) if m.distance_km is not None else math.inf
    spare = m.entry.capacity_available if m.entry.capacity_available is not None else 0.0
    return (dist, m.opens_in_minutes, -spare)


def explain(entries: list[Entry], request: Request) -> tuple[list[Match], list[Rejection]]:
    matches: list[Match] = []
    rejections: list[Rejection] = []
    for entry in entries:
        result = evaluate(entry, request)
        (matches if isinstance(result, Match) else rejections).append(result)  # type: ignore[arg-type]
    matches.sort(key=rank_key)
    return matches, rejections


class DirectoryIndex:
    """Entries bucketed on a coarse lat/lon grid, so a request only looks near its origin."""

    CELL = 0.25  # degrees (~28 km of latitude)

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)
        self.cells: dict[tuple[int, int], list[Entry]] = defaultdict(list)
        for e in self.entries:
            if e.point is not None:
                self.cells[(math.floor(e.point[0] / self.CELL),
                            math.floor(e.point[1] / self.CELL))].append(e)

    def __len__(self) -> int:
        return len(self.entries)

    def near(self, request: Request) -> Iterator[Entry]:
        if request.origin is None:
            yield from self.entries
            return
        lat, lon = request.origin
        dlat = request.max_distance_km / 110.0 + 0.01
        dlon = request.max_distance_km / (110.0 * max(math.cos(math.radians(lat)), 0.05)) + 0.01
        for i in range(math.floor((lat - dlat) / self.CELL), math.floor((lat + dlat) / self.CELL)
                       + 1):
            for j in range(math.floor((lon - dlon) / self.CELL),
                           math.floor((lon + dlon) / self.CELL) + 1):
                yield from self.cells.get((i, j), ())


def _quick_reject(e: Entry, r: Request, accepts: frozenset[str] | None) -> bool:
    """The checks of `evaluate` that need no strings or dates: most rejections end here."""
    if not e.accepting or (e.capacity_available is not None and e.capacity_available <= 0):
        return True
    lang = r.language
    if not (lang in e.languages or (not e.languages and lang == "en") or e.interpretation):
        return True
    if accepts is not None and not (e.payment & accepts):
        return True
    if r.age is not None and ((e.minimum_age is not None and r.age < e.minimum_age) or (
            e.maximum_age is not None and r.age > e.maximum_age)):
        return True
    return not e.hours


def match(entries: Sequence[Entry] | DirectoryIndex, request: Request) -> list[Match]:
    """The best `request.limit` matches (one per service), ranked; same result as evaluating
    every entry and sorting, but opening hours are only worked out for the nearest few."""
    request = replace(request, language=request.language.lower())
    accepts = None if not request.payment else PAYMENT_ACCEPTS.get(
        request.payment, frozenset({request.payment}))
    wanted = request.service_types
    pool = entries.near(request) if isinstance(entries, DirectoryIndex) else entries
    candidates: list[tuple[float, Entry]] = []
    origin = request.origin
    if origin is not None:
        cos_lat = math.cos(math.radians(origin[0]))
        limit_km = request.max_distance_km * 1.01 + 0.05
    for e in pool:
        if not (e.service_types & wanted) or _quick_reject(e, request, accepts):
            continue
        if origin is None:
            candidates.append((0.0, e))
            continue
        if e.point is None:
            continue
        # Equirectangular distance: within 1% of the great circle at these ranges.
        dy = e.point[0] - origin[0]
        dx = (e.point[1] - origin[1]) * cos_lat
        approx = 111.2 * math.sqrt(dx * dx + dy * dy)
        if approx <= limit_km:
            candidates.append((approx, e))
    candidates.sort(key=lambda c: c[0])
    found: list[Match] = []
    services: dict[str, Match] = {}
    for approx, e in candidates:
        if len(services) >= request.limit:
            # Everything further than the limit-th best's kilometre ranks after it.
            worst = sorted(services.values(), key=rank_key)[request.limit - 1]
            bound = math.floor(worst.distance_km or 0.0) + 1
            if approx > bound * 1.01 + 0.05:
                break
        result = evaluate(e, request)
        if isinstance(result, Match):
            found.append(result)
            best = services.get(e.service_id)
            if best is None or rank_key(result) < rank_key(best):
                services[e.service_id] = result
    found.sort(key=rank_key)
    # One option per service: the best-ranked of its locations.
    seen: set[str] = set()
    ranked = []
    for m in found:
        if m.entry.service_id not in seen:
            seen.add(m.entry.service_id)
            ranked.append(m)
    return ranked[: request.limit]
