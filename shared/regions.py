"""Regions: the unit of geography, as path-like ids so a parent is a prefix.

US: `us/<state>/<county>/<zip>` from the `zipcodes` package. Elsewhere a region catalog
(`shared/data/regions_*.csv`), e.g. `ca/bc/<health area>/<city>` for British Columbia.
Exact coordinates are never kept: a point resolves to the nearest postal-code centroid.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import zipcodes

# zipcodes has no type hints: its three lookups, typed as they are used here.
_ZipRecord = dict[str, Any]
_zip_matching: Callable[[str], list[_ZipRecord]] = zipcodes.matching
_zip_filter_by: Callable[..., list[_ZipRecord]] = zipcodes.filter_by
_zip_list_all: Callable[[], list[_ZipRecord]] = zipcodes.list_all

@dataclass(frozen=True)
class Region:
    id: str
    name: str
    time_zone: str

    def ancestors(self) -> list[str]:
        """This region's id and every parent's, most specific first."""
        parts = self.id.split("/")
        return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


class RegionNotFoundError(ValueError):
    pass


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _us_region(z: dict[str, object]) -> Region:
    state, county, code = str(z["state"]), str(z["county"]), str(z["zip_code"])
    return Region(
        id=f"us/{state.lower()}/{_slug(county)}/{code}",
        name=f"{code} ({str(z['city']).title()}, {state})",
        time_zone=str(z["timezone"]),
    )


@cache
def _catalog() -> dict[str, tuple[Region, str, str]]:
    """Non-US regions from the catalog files: id -> (region, city, province)."""
    out: dict[str, tuple[Region, str, str]] = {}
    for entry in resources.files("shared.data").iterdir():
        if entry.name.startswith("regions_") and entry.name.endswith(".csv"):
            with entry.open(encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    region = Region(row["region_id"], row["name"], row["time_zone"])
                    out[region.id] = (region, row["city"], row["province"])
    return out


def served_countries() -> list[str]:
    """ISO 3166 codes of the countries the regions cover: the US (ZIP codes) and those of
    the catalog files."""
    return sorted({"US", *(region_id.split("/")[0].upper() for region_id in _catalog())})


def by_postal_code(code: str) -> Region:
    code = code.strip()
    if re.fullmatch(r"\d{5}(-\d{4})?", code):
        found = _zip_matching(code[:5])
        if found:
            return _us_region(found[0])
    raise RegionNotFoundError(f"unknown postal code {code!r}")


def by_city(city: str, state: str) -> Region:
    """A city resolves to its county (US) or its catalog entry (elsewhere)."""
    for region, c, province in _catalog().values():
        if c.lower() == city.strip().lower() and province.lower() == state.strip().lower():
            return region
    found = _zip_filter_by(city=city.strip().title(), state=state.strip().upper())
    if found:
        z = found[0]
        st = str(z["state"])
        return Region(
            id=f"us/{st.lower()}/{_slug(str(z['county']))}",
            name=f"{z['county']}, {st}",
            time_zone=str(z["timezone"]),
        )
    raise RegionNotFoundError(f"unknown place {city!r}, {state!r}")


@cache
def _point_zips() -> list[dict[str, object]]:
    """ZIPs that cover an area (not PO boxes, military or unique-organization codes)."""
    return [z for z in _zip_list_all()
            if z["zip_code_type"] == "STANDARD" and z["county"] and z["timezone"]]


def by_point(lat: float, lon: float) -> Region:
    """The nearest US ZIP centroid within ~25 km; the point itself is not kept."""
    best: tuple[float, dict[str, object]] | None = None
    for z in _point_zips():
        zlat, zlon = float(str(z["lat"])), float(str(z["long"]))
        if abs(zlat - lat) > 0.5 or abs(zlon - lon) > 0.5:
            continue
        d = math.hypot(zlat - lat, (zlon - lon) * math.cos(math.radians(lat)))
        if best is None or d < best[0]:
            best = (d, z)
    if best is None or best[0] > 0.25:
        raise RegionNotFoundError("no region near that point")
    return _us_region(best[1])


def get_region(region_id: str) -> Region:
    if region_id in _catalog():
        return _catalog()[region_id][0]
    parts = region_id.split("/")
    if parts[0] == "us" and len(parts) == 4:
        region = by_postal_code(parts[3])
        if region.id == region_id:
            return region
    raise RegionNotFoundError(f"unknown region {region_id!r}")
