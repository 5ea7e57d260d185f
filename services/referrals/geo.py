"""Where a person is, as coarsely as matching needs: a region's centroid, never an address.

US regions use the ZIP centroid from `zipcodes` (a county: the mean of its ZIPs); British
Columbia catalog regions use their city's centre (public, approximate coordinates).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import zipcodes

from shared.regions import Region, RegionNotFoundError, by_city, by_postal_code, get_region

# zipcodes has no type hints: the two lookups used here, typed as they are used.
_zip_matching: Callable[[str], list[dict[str, Any]]] = zipcodes.matching
_zip_filter_by: Callable[..., list[dict[str, Any]]] = zipcodes.filter_by

# City centres of the BC catalog regions (approximate, public).
BC_CENTROIDS: dict[str, tuple[float, float]] = {
    "ca/bc/vancouver-coastal/vancouver": (49.2827, -123.1207),
    "ca/bc/fraser/surrey": (49.1913, -122.8490),
    "ca/bc/fraser/abbotsford": (49.0504, -122.3045),
    "ca/bc/fraser/agassiz": (49.2385, -121.7690),
    "ca/bc/interior/nelson": (49.4928, -117.2948),
    "ca/bc/interior/kamloops": (50.6745, -120.3273),
    "ca/bc/interior/merritt": (50.1113, -120.7862),
    "ca/bc/interior/cranbrook": (49.5097, -115.7688),
    "ca/bc/interior/vernon": (50.2670, -119.2720),
    "ca/bc/interior/penticton": (49.4991, -119.5937),
    "ca/bc/interior/kelowna": (49.8880, -119.4960),
    "ca/bc/interior/grand-forks": (49.0302, -118.4455),
    "ca/bc/interior/trail": (49.0955, -117.7100),
    "ca/bc/island/victoria": (48.4284, -123.3656),
    "ca/bc/island/nanaimo": (49.1659, -123.9401),
}


@cache
def centroid(region_id: str) -> tuple[float, float] | None:
    """The region's centre (lat, lon), or None when it has no usable centre."""
    if region_id in BC_CENTROIDS:
        return BC_CENTROIDS[region_id]
    parts = region_id.split("/")
    if parts[0] != "us":
        return None
    if len(parts) == 4:
        found = _zip_matching(parts[3])
        if found and found[0]["lat"]:
            return float(str(found[0]["lat"])), float(str(found[0]["long"]))
        return None
    if len(parts) == 3:
        state = parts[1].upper()
        points = [(float(str(z["lat"])), float(str(z["long"])))
                  for z in _zip_filter_by(state=state)
                  if z["county"] and _slug(str(z["county"])) == parts[2] and z["lat"]]
        if points:
            return (sum(p[0] for p in points) / len(points),
                    sum(p[1] for p in points) / len(points))
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))


def region_time_zone(region_id: str | None, default: str = "UTC") -> str:
    if not region_id:
        return default
    try:
        return get_region(region_id).time_zone
    except RegionNotFoundError:
        return default


def resolve_place(text: str) -> Region | None:
    """A ZIP code, or "City, ST/BC", as typed by a person; None if unknown."""
    text = text.strip()
    try:
        return by_postal_code(text)
    except RegionNotFoundError:
        pass
    if "," in text:
        city, _, state = text.rpartition(",")
        try:
            return by_city(city, state)
        except RegionNotFoundError:
            return None
    return None
