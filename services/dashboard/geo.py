"""Where regions go on the county map: a US county region id -> its FIPS code (the ids of
the vendored us-atlas counties), and a ZIP centroid -> its point in the map's Albers USA
frame (the projection us-atlas was made with: d3.geoAlbersUsa, scale 1300, translate
[487.5, 305]; only the lower 48 states here, Alaska and Hawaii are listed, not dotted)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import zipcodes

from services.dashboard.templating import STATIC_DIR

# zipcodes has no type hints: the lookup used here, typed as it is used.
_zip_matching: Callable[[str], list[dict[str, Any]]] = zipcodes.matching

TOPOLOGY = STATIC_DIR / "vendor" / "us-atlas" / "counties-albers-10m.json"
TOPOLOGY_URL = "/static/vendor/us-atlas/counties-albers-10m.json"
STATE_FIPS = {
    "al": "01", "ak": "02", "az": "04", "ar": "05", "ca": "06", "co": "08", "ct": "09",
    "de": "10", "dc": "11", "fl": "12", "ga": "13", "hi": "15", "id": "16", "il": "17",
    "in": "18", "ia": "19", "ks": "20", "ky": "21", "la": "22", "me": "23", "md": "24",
    "ma": "25", "mi": "26", "mn": "27", "ms": "28", "mo": "29", "mt": "30", "ne": "31",
    "nv": "32", "nh": "33", "nj": "34", "nm": "35", "ny": "36", "nc": "37", "nd": "38",
    "oh": "39", "ok": "40", "or": "41", "pa": "42", "ri": "44", "sc": "45", "sd": "46",
    "tn": "47", "tx": "48", "ut": "49", "vt": "50", "va": "51", "wa": "53", "wv": "54",
    "wi": "55", "wy": "56", "pr": "72",
}
SUFFIXES = ("-city-and-borough", "-census-area", "-municipality", "-borough", "-county",
            "-parish")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _bare(county_slug: str) -> str:
    for suffix in SUFFIXES:
        if county_slug.endswith(suffix):
            return county_slug[: -len(suffix)]
    return county_slug


@cache
def _county_fips() -> dict[tuple[str, str], str]:
    """(state FIPS, county name slug without its 'county'/'parish'...) -> county FIPS."""
    topo = json.loads(TOPOLOGY.read_text())
    out: dict[tuple[str, str], str] = {}
    for g in topo["objects"]["counties"]["geometries"]:
        fips = str(g["id"])
        out.setdefault((fips[:2], _slug(g["properties"]["name"])), fips)
    return out


def county_fips(region_id: str) -> str | None:
    """`us/<state>/<county>[/<zip>]` -> the county's 5-digit FIPS code, or None."""
    parts = region_id.split("/")
    if len(parts) < 3 or parts[0] != "us" or parts[1] not in STATE_FIPS:
        return None
    state = STATE_FIPS[parts[1]]
    table = _county_fips()
    return table.get((state, _bare(parts[2]))) or table.get((state, parts[2]))


_PHI0, _PHI1 = math.radians(29.5), math.radians(45.5)
_N = (math.sin(_PHI0) + math.sin(_PHI1)) / 2
_C = 1 + math.sin(_PHI0) * (2 * _N - math.sin(_PHI0))
_R0 = math.sqrt(_C) / _N
_K, _TX, _TY = 1300.0, 487.5, 305.0


def _conic(lon: float, lat: float) -> tuple[float, float]:
    r = math.sqrt(_C - 2 * _N * math.sin(lat)) / _N
    return r * math.sin(lon * _N), _R0 - r * math.cos(lon * _N)


_CX, _CY = _conic(math.radians(-0.6), math.radians(38.7))  # d3's center, rotated frame


def albers_usa(lat: float, lon: float) -> tuple[float, float] | None:
    """A lower-48 point in the map's frame (d3.geoAlbers rotated 96° W), None elsewhere."""
    if not (24.0 <= lat <= 50.0 and -125.0 <= lon <= -66.0):
        return None
    x, y = _conic(math.radians(lon + 96.0), math.radians(lat))
    return _TX + _K * (x - _CX), _TY - _K * (y - _CY)


@cache
def zip_point(region_id: str) -> tuple[float, float] | None:
    """`us/<state>/<county>/<zip>` -> the ZIP centroid in the map's frame, or None."""
    parts = region_id.split("/")
    if len(parts) != 4 or parts[0] != "us" or not re.fullmatch(r"\d{5}", parts[3]):
        return None
    found = _zip_matching(parts[3])
    if not found:
        return None
    return albers_usa(float(found[0]["lat"]), float(found[0]["long"]))
