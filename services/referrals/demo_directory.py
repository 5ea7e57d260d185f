"""A fictional demo directory: ~50 providers around Seattle (the demo region, ZIP 98104) and
in British Columbia, written as an HSDS 3.0 data package under var/ and imported.

Deterministic (a fixed seed): every run writes the same package, and the import upserts by
id, so seeding twice changes nothing. Names, addresses and 555 phone numbers are invented.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from services.referrals.geo import centroid
from services.referrals.hsds import ImportReport, import_path, write_package
from shared.db import session_scope
from shared.regions import by_postal_code
from shared.settings import Settings

SEATTLE_ZIPS = ("98101", "98102", "98103", "98104", "98105", "98106", "98107", "98108",
                "98109", "98112", "98115", "98116", "98117", "98118", "98119", "98121",
                "98122", "98125", "98126", "98133", "98144", "98146", "98168", "98178",
                "98199", "98104", "98104", "98122", "98144", "98101", "98134", "98104",
                "98118", "98108", "98122")
BC_REGIONS = ("ca/bc/vancouver-coastal/vancouver",) * 6 + (
    "ca/bc/fraser/surrey", "ca/bc/fraser/surrey", "ca/bc/fraser/abbotsford",
    "ca/bc/island/victoria", "ca/bc/island/victoria", "ca/bc/island/nanaimo",
    "ca/bc/interior/kamloops", "ca/bc/interior/kelowna", "ca/bc/interior/penticton")
BC_CITY = {"vancouver": "Vancouver", "surrey": "Surrey", "abbotsford": "Abbotsford",
           "victoria": "Victoria", "nanaimo": "Nanaimo", "kamloops": "Kamloops",
           "kelowna": "Kelowna", "penticton": "Penticton"}
PREFIXES = ("Cedar", "Harbor", "Alder", "Madrona", "Orca", "Evergreen", "Summit", "Lakeview",
            "Pioneer", "Heron", "Salal", "Fireweed", "Driftwood", "Kestrel", "Bluff", "Tidewater")
WEEKDAYS = "MO,TU,WE,TH,FR"
EVERY_DAY = "MO,TU,WE,TH,FR,SA,SU"
# (name, service type codes, payment codes, [(byday, opens, closes)], capacity unit, ages)
PROFILES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, str, str], ...],
                      str | None, tuple[int | None, int | None]], ...] = (
    ("Low-Barrier Bupe Clinic", ("BU", "OP"), ("MD", "SF"),
     ((WEEKDAYS, "08:00", "20:00"), ("SA", "10:00", "16:00")), "intake slot", (16, None)),
    ("Opioid Treatment Program", ("OTP", "BU"), ("MD",), ((EVERY_DAY, "05:30", "14:00"),),
     "intake slot", (18, None)),
    ("Withdrawal Management Centre", ("DT",), ("MD", "NP"), (("", "00:00", "23:59"),), "bed",
     (18, None)),
    ("Recovery House", ("RES",), ("MD",), (("", "00:00", "23:59"),), "bed", (18, None)),
    ("Harm Reduction Drop-in", ("syringe_services", "naloxone", "drug_checking"), ("NP",),
     ((EVERY_DAY, "10:00", "18:00"),), None, (None, None)),
    ("Peer Support Hub", ("peer_support", "naloxone"), ("NP",), ((WEEKDAYS, "09:00", "17:00"),),
     None, (None, None)),
    ("Community Mental Health", ("MH", "OP"), ("MD", "SF"), ((WEEKDAYS, "08:30", "17:00"),),
     None, (None, None)),
    ("Housing Navigation", ("housing",), ("NP",), ((WEEKDAYS, "09:00", "16:00"),), None,
     (18, None)),
    ("Bridge Clinic 24/7", ("BU", "DT", "naloxone"), ("MD", "SF", "NP"),
     (("", "00:00", "23:59"),), "intake slot", (None, None)),
    ("Naltrexone and Counselling", ("NU", "OP"), ("MD", "PI"), (("MO,TU,WE,TH,FR,SA", "09:00",
                                                                  "18:00"),), None,
     (18, None)),
    ("Youth Outreach", ("peer_support", "MH", "BU"), ("MD", "NP"),
     ((WEEKDAYS, "12:00", "20:00"),), None, (12, 24)),
)
TERMS = {code: f"tt-{code.lower()}" for p in PROFILES for code in (*p[1], *p[2])}


def build_rows(seed: int = 6) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in (
        "organization", "service", "location", "address", "service_at_location", "phone",
        "schedule", "language", "service_area", "unit", "service_capacity", "taxonomy_term",
        "attribute")}
    rows["unit"] = [{"id": "unit-bed", "name": "bed"},
                    {"id": "unit-intake-slot", "name": "intake slot"}]
    for code, term_id in TERMS.items():
        rows["taxonomy_term"].append({"id": term_id, "code": code, "name": code,
                                      "taxonomy": "SAMHSA FindTreatment.gov codes / Lookout"})
    places: list[tuple[str, str, str, str, str]] = []  # (region_id, city, state, postal, cc)
    for z in SEATTLE_ZIPS:
        places.append((by_postal_code(z).id, "Seattle", "WA", z, "US"))
    for region_id in BC_REGIONS:
        places.append((region_id, BC_CITY[region_id.rsplit("/", 1)[1]], "BC", "", "CA"))
    for n, (region_id, city, state, postal, country) in enumerate(places, start=1):
        profile = PROFILES[(n - 1) % len(PROFILES)] if n <= len(PROFILES) else rng.choice(
            PROFILES)
        name, types, payments, hours, unit, (min_age, max_age) = profile
        if country == "CA":
            payments = tuple("NP" if p in ("MD", "PI") else p for p in payments)  # MSP-covered
        prefix = PREFIXES[(n * 7) % len(PREFIXES)]
        org_id, svc_id, loc_id = f"demo-org-{n:03d}", f"demo-svc-{n:03d}", f"demo-loc-{n:03d}"
        lat, lon = centroid(region_id) or (0.0, 0.0)
        lat += rng.uniform(-0.008, 0.008)
        lon += rng.uniform(-0.008, 0.008)
        area = "206" if country == "US" else "604"
        rows["organization"].append({"id": org_id, "name": f"{prefix} {city} Health (demo)",
                                     "description": "Fictional provider for the demo."})
        rows["service"].append({
            "id": svc_id, "organization_id": org_id, "name": f"{prefix} {name}",
            "description": f"Fictional {name.lower()} for the Lookout demo.", "status": "active",
            "interpretation_services": "Phone interpreters" if rng.random() < 0.3 else "",
            "minimum_age": min_age, "maximum_age": max_age})
        rows["location"].append({"id": loc_id, "organization_id": org_id,
                                 "location_type": "physical", "name": f"{prefix} {city}",
                                 "latitude": round(lat, 5), "longitude": round(lon, 5)})
        rows["address"].append({"id": f"{loc_id}-address", "location_id": loc_id,
                                "address_1": f"{100 + n * 10} Demo Street", "city": city,
                                "state_province": state, "postal_code": postal,
                                "country": country, "address_type": "physical"})
        rows["service_at_location"].append({"id": f"demo-sal-{n:03d}", "service_id": svc_id,
                                            "location_id": loc_id})
        rows["phone"].append({"id": f"demo-phone-{n:03d}", "service_id": svc_id,
                              "number": f"{area}-555-01{n % 100:02d}", "type": "voice"})
        for i, (byday, opens, closes) in enumerate(hours):
            rows["schedule"].append({"id": f"demo-sch-{n:03d}-{i}", "service_id": svc_id,
                                     "freq": "WEEKLY", "byday": byday, "opens_at": opens,
                                     "closes_at": closes})
        langs = ["en"]
        extra = ("es", "vi", "zh") if country == "US" else ("fr", "pa", "zh")
        langs += [code for code in extra if rng.random() < 0.3]
        for code in langs:
            rows["language"].append({"id": f"demo-lang-{n:03d}-{code}", "service_id": svc_id,
                                     "code": code})
        rows["service_area"].append({"id": f"demo-area-{n:03d}", "service_id": svc_id,
                                     "name": "King County" if country == "US" else city})
        if unit is not None:
            maximum = rng.choice((6, 10, 20))
            rows["service_capacity"].append({
                "id": f"demo-cap-{n:03d}", "service_id": svc_id,
                "unit_id": "unit-bed" if unit == "bed" else "unit-intake-slot",
                "available": rng.choice((0, 1, 2, 3, maximum // 2)), "maximum": maximum,
                "updated": "2026-11-01T08:00:00+00:00"})
        for j, code in enumerate((*types, *payments)):
            rows["attribute"].append({"id": f"demo-attr-{n:03d}-{j}", "link_id": svc_id,
                                      "link_entity": "service", "taxonomy_term_id": TERMS[code]})
    return rows


def seed_directory(settings: Settings) -> ImportReport:
    """Write the demo package under var/ and import it (idempotent)."""
    directory = Path(settings.var_dir) / "referrals-demo-directory"
    write_package(build_rows(), directory)
    with session_scope(settings.sqlalchemy_url) as session:
        report = import_path(session, directory)
    if report.rejected:
        raise RuntimeError("the demo directory has rejected records:\n" + report.summary())
    return report
