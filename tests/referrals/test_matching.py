"""Matching as a table: each case changes one thing about a provider or the request."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.referrals.geo import centroid
from services.referrals.matching import Entry, Hours, Match, Rejection, Request, evaluate, match

PACIFIC = ZoneInfo("America/Los_Angeles")
TUESDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=PACIFIC)
SUNDAY_10AM = datetime(2026, 11, 29, 10, 0, tzinfo=PACIFIC)
SEATTLE = centroid("us/wa/king-county/98104")
WEEKDAYS = frozenset({"MO", "TU", "WE", "TH", "FR"})
NEAR = (47.6015, -122.3301)  # ~0.3 km from the 98104 centroid
OLYMPIA = (47.0379, -122.9007)  # ~80 km south-west


def entry(**overrides: Any) -> Entry:
    base = Entry(
        service_id="svc", service_at_location_id="sal", name="Clinic",
        service_types=frozenset({"buprenorphine"}), point=NEAR,
        hours=(Hours(WEEKDAYS, time(8), time(20)),), time_zone="America/Los_Angeles",
        languages=frozenset({"en"}), payment=frozenset({"medicaid", "sliding_fee"}),
        capacity_available=4.0)
    return replace(base, **overrides)


def request(**overrides: Any) -> Request:
    assert SEATTLE is not None
    base = Request(service_types=frozenset({"buprenorphine"}), now=TUESDAY_10AM,
                   time_zone="America/Los_Angeles", origin=SEATTLE, language="en",
                   payment=None, age=None, within_hours=2, max_distance_km=40)
    return replace(base, **overrides)


CASES: list[tuple[str, Entry, Request, str | None]] = [
    # (case, provider, request, rejection reason fragment or None for a match)
    ("open now, takes the person", entry(), request(), None),
    ("closed now (Sunday)", entry(), request(now=SUNDAY_10AM), "closed now"),
    ("opens within the window", entry(hours=(Hours(WEEKDAYS, time(11), time(19)),)),
     request(), None),
    ("opens after the window", entry(hours=(Hours(WEEKDAYS, time(13), time(19)),)),
     request(), "not open within 2 h"),
    ("full", entry(capacity_available=0.0), request(), "full"),
    ("not taking referrals", entry(accepting=False), request(), "not taking referrals"),
    ("capacity not reported is not full", entry(capacity_available=None), request(), None),
    ("wrong language", entry(), request(language="es"), "language 'es'"),
    ("interpretation covers the language", entry(interpretation=True), request(language="es"),
     None),
    ("no Medicaid", entry(payment=frozenset({"sliding_fee"})), request(payment="medicaid"),
     "does not take medicaid"),
    ("uninsured: sliding fee will do", entry(payment=frozenset({"sliding_fee"})),
     request(payment="uninsured"), None),
    ("uninsured: Medicaid only", entry(payment=frozenset({"medicaid"})),
     request(payment="uninsured"), "does not take uninsured"),
    ("too far", entry(point=OLYMPIA), request(), "too far"),
    ("location unknown", entry(point=None), request(), "location unknown"),
    ("too young", entry(minimum_age=18), request(age=16), "minimum age 18"),
    ("too old for a youth service", entry(maximum_age=24), request(age=30), "maximum age 24"),
    ("other service", entry(service_types=frozenset({"methadone"})), request(),
     "does not offer"),
    ("hours unknown", entry(hours=()), request(), "opening hours unknown"),
    ("overnight opening, at 2 am", entry(hours=(Hours(frozenset(), time(22), time(6)),)),
     request(now=datetime(2026, 11, 24, 2, 0, tzinfo=PACIFIC)), None),
    ("schedule expired", entry(hours=(Hours(WEEKDAYS, time(8), time(20),
                                            valid_to=date(2026, 10, 31)),)),
     request(), "closed now"),
    ("hours with a UTC offset (08:00-08:00 is 8 am Pacific)",
     entry(hours=(Hours(WEEKDAYS, time(8), time(9), utc_offset=timedelta(hours=-8)),)),
     request(now=datetime(2026, 11, 24, 8, 30, tzinfo=PACIFIC)), None),
    ("the request's zone applies when the provider has none",
     entry(time_zone=None), request(now=datetime(2026, 11, 24, 21, 0, tzinfo=PACIFIC)),
     "closed now"),
]


@pytest.mark.parametrize(("case", "provider", "req", "rejected"), CASES,
                         ids=[c[0] for c in CASES])
def test_matching_table(case: str, provider: Entry, req: Request, rejected: str | None) -> None:
    result = evaluate(provider, req)
    if rejected is None:
        assert isinstance(result, Match), f"{case}: rejected: {getattr(result, 'reason', '')}"
        assert result.reasons, "a match says why it matched"
    else:
        assert isinstance(result, Rejection), f"{case}: matched"
        assert rejected in result.reason


def test_a_match_explains_itself() -> None:
    result = evaluate(entry(), request(payment="medicaid", age=30, language="en"))
    assert isinstance(result, Match)
    text = "; ".join(result.reasons)
    for fragment in ("offers buprenorphine", "4 places available", "speaks en",
                     "takes medicaid", "km away", "open now until 20:00"):
        assert fragment in text
    assert result.opens_in_minutes == 0
    assert result.distance_km is not None and result.distance_km < 1


def test_open_24_hours_is_said_so() -> None:
    result = evaluate(entry(hours=(Hours(frozenset(), time(0), time(23, 59)),)), request())
    assert isinstance(result, Match)
    assert "open now, 24 hours" in result.reasons
    assert result.closes_at is None


def test_opening_soon_counts_minutes() -> None:
    result = evaluate(entry(hours=(Hours(WEEKDAYS, time(11, 15), time(19)),)), request())
    assert isinstance(result, Match)
    assert result.opens_in_minutes == 75


def test_ranking_is_by_distance_then_availability() -> None:
    far_open = entry(service_id="far", point=(47.66, -122.34))  # ~6.5 km
    near_later = entry(service_id="near-later",
                       hours=(Hours(WEEKDAYS, time(11), time(19)),))
    near_open_small = entry(service_id="near-small", capacity_available=1.0)
    near_open_big = entry(service_id="near-big", capacity_available=9.0)
    closed = entry(service_id="closed", hours=(Hours(frozenset({"SU"}), time(8), time(9)),))
    ranked = match([far_open, near_later, closed, near_open_small, near_open_big],
                   request(limit=5))
    assert [m.entry.service_id for m in ranked] == ["near-big", "near-small", "near-later",
                                                    "far"]


def test_at_most_limit_and_one_per_service() -> None:
    entries = [entry(service_id=f"s{i}", service_at_location_id=f"sal{i}") for i in range(5)]
    entries.append(entry(service_id="s0", service_at_location_id="sal-other",
                         point=(47.61, -122.33)))
    ranked = match(entries, request())
    assert len(ranked) == 3
    assert len({m.entry.service_id for m in ranked}) == 3


def test_the_fast_path_ranks_like_evaluating_everything() -> None:
    """`match` prunes (grid, cheap checks first, hours only for the nearest); it must give
    the same ranking as evaluating every entry and sorting."""
    from benchmarks.referrals.matching import generate, requests
    from services.referrals.matching import DirectoryIndex, explain, rank_key

    entries = generate(600, seed=3)
    index = DirectoryIndex(entries)
    compared = 0
    for req in requests(150, seed=4):
        matches, _ = explain(entries, req)
        seen: set[str] = set()
        brute = []
        for m in matches:
            if m.entry.service_id not in seen:
                seen.add(m.entry.service_id)
                brute.append(m)
        fast = match(index, req)
        assert [rank_key(m) for m in fast] == [rank_key(m) for m in brute[: req.limit]]
        compared += bool(fast)
    assert compared > 50
