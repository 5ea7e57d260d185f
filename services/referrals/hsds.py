"""Open Referral HSDS 3.0 import and export.

Input: a directory or .zip holding a tabular data package (`datapackage.json` naming CSV
resources, or bare `<table>.csv` files), or a JSON file of HSDS service objects (one, a list,
or an API page `{"contents": [...]}`) with their nested organization, locations, phones,
schedules and so on. Every record is validated; bad ones are rejected with a reason and the
rest are upserted by id, so importing the same package twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals.matching import DAYS, code_to_payment, code_to_type
from shared.csvexport import safe_cell, unescape_cell
from shared.db import utcnow
from shared.regions import RegionNotFoundError, by_city, by_postal_code

# HSDS tables we read, their fields (HSDS names) and which are required; in load order.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "organization": (("id", "name", "description", "email", "website"), ("id", "name")),
    "service": (("id", "organization_id", "name", "description", "url", "email", "status",
                 "interpretation_services", "fees_description", "eligibility_description",
                 "minimum_age", "maximum_age"), ("id", "organization_id", "name")),
    "location": (("id", "organization_id", "location_type", "name", "description",
                  "transportation", "latitude", "longitude"), ("id",)),
    "address": (("id", "location_id", "address_1", "city", "state_province", "postal_code",
                 "country", "address_type"), ("id", "location_id")),
    "service_at_location": (("id", "service_id", "location_id", "description"),
                            ("id", "service_id", "location_id")),
    "phone": (("id", "service_id", "location_id", "organization_id", "service_at_location_id",
               "contact_id", "number", "extension", "type", "description"), ("id", "number")),
    "schedule": (("id", "service_id", "location_id", "service_at_location_id", "freq", "byday",
                  "opens_at", "closes_at", "valid_from", "valid_to", "description"),
                 ("id", "opens_at", "closes_at")),
    "language": (("id", "service_id", "location_id", "phone_id", "name", "code"), ("id",)),
    "service_area": (("id", "service_id", "service_at_location_id", "name", "description"),
                     ("id",)),
    "unit": (("id", "name"), ("id",)),
    "service_capacity": (("id", "service_id", "unit_id", "available", "maximum",
                          "description", "updated"), ("id", "service_id", "available")),
    "cost_option": (("id", "service_id", "option", "amount", "currency",
                     "amount_description"), ("id", "service_id")),
    "taxonomy_term": (("id", "code", "name", "taxonomy"), ("id",)),
    "attribute": (("id", "link_id", "link_entity", "taxonomy_term_id", "value", "label"),
                  ("id", "link_id", "taxonomy_term_id")),
}
# HSDS tables Lookout does not keep: their records are counted and reported, not imported.
UNUSED_TABLES = ("contact", "program", "funding", "accessibility", "required_document",
                 "organization_identifier", "url", "metadata", "meta_table_description",
                 "taxonomy")
UNUSED_REASON = "not used by Lookout's directory"
TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::[0-5]\d)?(Z|[+-]\d{2}:?\d{2})?$")
SERVICE_STATUS = {"active", "inactive", "defunct", "temporarily closed"}


@dataclass
class Rejected:
    table: str
    id: str
    reason: str


@dataclass
class ImportReport:
    """What an import did: records imported per table, records imported with a change
    (`changed`), records deliberately not imported (`skipped`) and rejected ones, each
    with its reason."""

    imported: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: list[Rejected] = field(default_factory=list)
    changed: list[Rejected] = field(default_factory=list)
    skipped: list[Rejected] = field(default_factory=list)

    def reject(self, table: str, row: dict[str, Any], reason: str) -> None:
        self.rejected.append(Rejected(table, str(row.get("id") or "?"), reason))

    def change(self, table: str, row: dict[str, Any], reason: str) -> None:
        self.changed.append(Rejected(table, str(row.get("id") or "?"), reason))

    def skip(self, table: str, row: dict[str, Any], reason: str) -> None:
        self.skipped.append(Rejected(table, str(row.get("id") or "?"), reason))

    def summary(self) -> str:
        parts = [f"{n} {t}" for t, n in self.imported.items() if n]
        lines = [f"imported: {', '.join(parts) or 'nothing'}"]
        if self.changed:
            lines.append(f"imported with a change: {len(self.changed)}")
            lines += [f"  {r.table} {r.id}: {r.reason}" for r in self.changed]
        if self.skipped:
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for r in self.skipped:
                groups[(r.table, r.reason)].append(r.id)
            lines.append(f"not imported: {len(self.skipped)}")
            for (table, reason), ids in groups.items():
                shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
                lines.append(f"  {len(ids)} {table} ({shown}): {reason}")
        lines.append(f"rejected: {len(self.rejected)}")
        lines += [f"  {r.table} {r.id}: {r.reason}" for r in self.rejected]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- reading input

def _table_name(name: str) -> str | None:
    """The HSDS table a CSV file or resource name stands for (singular or plural)."""
    stem = name.lower().removesuffix(".csv")
    irregular = {"service_capacities": "service_capacity", "taxonomy_terms": "taxonomy_term",
                 "addresses": "address", "taxonomies": "taxonomy",
                 "accessibilities": "accessibility", "service_at_locations":
                 "service_at_location"}
    if stem in irregular:
        return irregular[stem]
    for table in (*TABLES, *UNUSED_TABLES):
        if stem in (table, table + "s", table.replace("_", "") + "s", table + "es"):
            return table
    return None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [{k.strip(): (unescape_cell(v.strip()) if isinstance(v, str) else v)
                 for k, v in row.items() if k} for row in csv.DictReader(fh)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path.name}: not valid JSON ({exc})") from None


def read_package(path: Path, problems: list[Rejected] | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
    """Rows per HSDS table from a package directory, a .zip of one, or a JSON file.
    What cannot be read as HSDS records is added to `problems` (or dropped)."""
    problems = [] if problems is None else problems
    if path.is_file() and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ValueError(f"unsafe path in archive: {member!r}")
            archive.extractall(tmp)
            root = Path(tmp)
            found = list(root.rglob("datapackage.json"))
            return read_package(found[0].parent if found else root, problems)
    if path.is_file() and path.suffix.lower() == ".json":
        return flatten_json(_read_json(path), path.name, problems)
    if path.is_file() and path.suffix.lower() == ".csv":
        table = _table_name(path.name)
        if table is None:
            raise ValueError(f"{path.name}: not an HSDS table name")
        return {table: _read_csv(path)}
    if not path.is_dir():
        raise FileNotFoundError(path)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    descriptor = path / "datapackage.json"
    package: Any = None
    if descriptor.exists():
        try:
            package = _read_json(descriptor)
        except ValueError as exc:
            problems.append(Rejected("file", "datapackage.json",
                                     f"{exc}; the CSV files were read by their names"))
    if isinstance(package, dict) and isinstance(package.get("resources"), list):
        for resource in package["resources"]:
            if not isinstance(resource, dict):
                continue
            table = _table_name(str(resource.get("name", ""))) or _table_name(
                Path(str(resource.get("path", ""))).name)
            file = path / str(resource.get("path", ""))
            if table and file.is_file() and file.suffix.lower() == ".csv":
                rows[table] += _read_csv(file)
            elif file.is_file():
                problems.append(Rejected("file", file.name, "not an HSDS table"))
    else:
        for file in sorted(path.glob("*.csv")):
            table = _table_name(file.name)
            if table:
                rows[table] += _read_csv(file)
            else:
                problems.append(Rejected("file", file.name, "not an HSDS table name"))
        for file in sorted(path.glob("*.json")):
            if file.name == "datapackage.json":
                continue
            try:
                data = _read_json(file)
            except ValueError as exc:
                problems.append(Rejected("file", file.name, str(exc)))
                continue
            for table, more in flatten_json(data, file.name, problems).items():
                rows[table] += more
    return rows


# Nested HSDS keys (lists) -> the table of their records; a child gets its parent's id as
# `<parent table>_id` (an attribute: `link_id` and `link_entity`).
CHILDREN: dict[str, str] = {
    "phones": "phone", "schedules": "schedule", "languages": "language",
    "service_areas": "service_area", "capacities": "service_capacity",
    "cost_options": "cost_option", "addresses": "address", "attributes": "attribute",
    "service_at_locations": "service_at_location", "services": "service",
    "locations": "location", "contacts": "contact", "funding": "funding",
    "accessibility": "accessibility", "programs": "program",
    "required_documents": "required_document",
    "organization_identifiers": "organization_identifier", "metadata": "metadata",
    "additional_urls": "url", "additional_websites": "url",
}
# Nested HSDS keys (one object) -> its table; the parent gets `<table>_id`.
REFERENCED: dict[str, str] = {
    "organization": "organization", "location": "location", "service": "service",
    "unit": "unit", "taxonomy_term": "taxonomy_term", "program": "program",
    "taxonomy_detail": "taxonomy",
}
LINK_KEYS = ("link_id", "link_entity")


def hsds_kind(obj: dict[str, Any]) -> str | None:
    """Which HSDS object a top-level JSON object is, by its shape (None: not one)."""
    keys = set(obj)
    if "id" not in keys:
        return None
    if isinstance(obj.get("service"), dict) or isinstance(obj.get("location"), dict) or (
            {"service_id", "location_id"} <= keys and "name" not in keys):
        return "service_at_location"
    if keys & {"services", "legal_status", "tax_status", "tax_id", "year_incorporated",
               "website", "parent_organization_id", "logo", "organization_identifiers",
               "additional_websites"} and "status" not in keys:
        return "organization"
    if keys & {"status", "organization", "organization_id", "service_at_locations",
               "program", "eligibility_description", "fees_description"}:
        return "service"
    if keys & {"location_type", "latitude", "longitude", "addresses", "transportation"}:
        return "location"
    if keys & {"code", "term_uri", "parent_id", "taxonomy", "taxonomy_id"}:
        return "taxonomy_term"
    if {"name", "version"} <= keys:
        return "taxonomy"
    return None


def flatten_json(data: Any, source: str = "JSON",
                 problems: list[Rejected] | None = None) -> dict[str, list[dict[str, Any]]]:
    """HSDS JSON (one object, a list, an API page `{"contents": [...]}`, or the tabular
    form `{"services.csv": [...]}`) -> rows per table. Nested records are taken once per
    id: the same phone under a service, its location and its service_at_location is one
    phone with all three parents."""
    problems = [] if problems is None else problems
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_id: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)

    def keep(table: str, row: dict[str, Any]) -> dict[str, Any]:
        ident = row.get("id")
        if _blank(ident) or isinstance(ident, (dict, list)):
            rows[table].append(row)  # rejected on import: no id
            return row
        first = by_id[table].get(str(ident))
        if first is None:
            by_id[table][str(ident)] = row
            rows[table].append(row)
            return row
        for key, value in row.items():  # the same record again: its parents add up
            if _blank(first.get(key)):
                first[key] = value
            elif key.endswith("_id") or key in LINK_KEYS or _blank(value):
                continue
            elif str(first[key]) != str(value):
                problems.append(Rejected(table, str(ident), f"nested twice with different "
                                         f"{key} ({first[key]!r}, {value!r}): the first kept"))
        return first

    def add(table: str, obj: dict[str, Any], parent: tuple[str, str] | None) -> None:
        row = {k: v for k, v in obj.items() if not isinstance(v, (list, dict))}
        if parent is not None:
            parent_table, parent_id = parent
            if table == "attribute":
                row.setdefault("link_id", parent_id)
                row.setdefault("link_entity", parent_table)
            else:
                row.setdefault(f"{parent_table}_id", parent_id)
        for key, value in obj.items():
            if key in REFERENCED and isinstance(value, dict):
                add(REFERENCED[key], value, None)
                row.setdefault(f"{REFERENCED[key]}_id", value.get("id"))
        keep(table, row)
        own_id = str(obj.get("id"))
        for key, value in obj.items():
            if key in CHILDREN and isinstance(value, list):
                for child in value:
                    if isinstance(child, dict):
                        add(CHILDREN[key], child, (table, own_id))

    if isinstance(data, dict) and isinstance(data.get("contents"), list):
        data = data["contents"]
    if isinstance(data, dict) and data and all(str(k).endswith(".csv") for k in data):
        for name, records in data.items():  # the standard's tabular JSON
            table = _table_name(str(name))
            if table is None or not isinstance(records, list):
                problems.append(Rejected("file", f"{source}:{name}", "not an HSDS table"))
                continue
            for record in records:
                if isinstance(record, dict):
                    keep(table, dict(record))
        return rows
    objects = data if isinstance(data, list) else [data]
    for number, obj in enumerate(objects, start=1):
        kind = hsds_kind(obj) if isinstance(obj, dict) else None
        if kind is None:
            ident = obj.get("id") if isinstance(obj, dict) else None
            problems.append(Rejected("file", f"{source}#{number}" + (f" {ident}" if ident else ""),
                                     "not an HSDS service, organization, location, "
                                     "service_at_location or taxonomy term"))
            continue
        add(kind, obj, None)
    return rows


# ---------------------------------------------------------------------------- validating

def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    return None if _blank(value) else str(value).strip()


def _number(value: Any, what: str) -> float | None:
    if _blank(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None


def _int(value: Any, what: str) -> int | None:
    number = _number(value, what)
    if number is None:
        return None
    if number != int(number) or number < 0:
        raise ValueError(f"{what} is not a whole number of years: {value!r}")
    return int(number)


def _date(value: Any, what: str) -> date | None:
    if _blank(value):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(f"{what} is not a YYYY-MM-DD date: {value!r}") from None


def _time(value: Any, what: str) -> str:
    text = str(value).strip()
    if not TIME_RE.match(text):
        raise ValueError(f"{what} is not HH:MM (with an optional UTC offset): {value!r}")
    return text


class _Loader:
    def __init__(self, session: Session, report: ImportReport) -> None:
        self.session = session
        self.report = report
        self.known: dict[type[Any], set[str]] = defaultdict(set)
        self.units: dict[str, str | None] = {}
        self.terms: dict[str, dict[str, Any]] = {}
        # Units and terms are kept only on the capacities and attributes that use them.
        self.unit_rows: dict[str, dict[str, Any]] = {}
        self.term_rows: dict[str, dict[str, Any]] = {}
        self.used_units: set[str] = set()
        self.used_terms: set[str] = set()
        self.attributes: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def exists(self, model: type[Any], ident: Any) -> bool:
        if _blank(ident):
            return False
        ident = str(ident)
        if ident in self.known[model]:
            return True
        if self.session.get(model, ident) is not None:
            self.known[model].add(ident)
            return True
        return False

    def need(self, model: type[Any], row: dict[str, Any], key: str, optional: bool = False
             ) -> str | None:
        value = row.get(key)
        if _blank(value):
            if optional:
                return None
            raise ValueError(f"{key} is missing")
        if not self.exists(model, value):
            raise ValueError(f"{key} {value!r} does not exist")
        return str(value)

    def maybe(self, model: type[Any], table: str, r: dict[str, Any], key: str) -> str | None:
        """An optional reference: kept if it resolves; one that does not is dropped, and
        the record imported without it (and reported)."""
        value = r.get(key)
        if _blank(value):
            return None
        if not self.exists(model, value):
            self.report.change(table, r, f"{key} {value!r} does not exist: imported without it")
            return None
        return str(value)

    def put(self, table: str, model: type[Any], values: dict[str, Any]) -> None:
        self.session.merge(model(**values))
        self.known[model].add(str(values["id"]))
        self.report.imported[table] += 1

    # one method per table; each raises ValueError for a record to reject
    def organization(self, r: dict[str, Any]) -> None:
        self.put("organization", m.Organization, {
            "id": str(r["id"]), "name": str(r["name"]), "description": _text(r.get("description")),
            "email": _text(r.get("email")), "website": _text(r.get("website"))})

    def service(self, r: dict[str, Any]) -> None:
        org = self.need(m.Organization, r, "organization_id")
        status = (_text(r.get("status")) or "active").lower()
        if status not in SERVICE_STATUS:
            raise ValueError(f"status {status!r} is not one of {sorted(SERVICE_STATUS)}")
        minimum = _int(r.get("minimum_age"), "minimum_age")
        maximum = _int(r.get("maximum_age"), "maximum_age")
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ValueError("minimum_age is above maximum_age")
        existing = self.session.get(m.Service, str(r["id"]))
        values: dict[str, Any] = {
            "id": str(r["id"]), "organization_id": org, "name": str(r["name"]),
            "description": _text(r.get("description")), "url": _text(r.get("url")),
            "email": _text(r.get("email")), "status": status,
            "interpretation_services": _text(r.get("interpretation_services")),
            "fees_description": _text(r.get("fees_description")),
            "eligibility_description": _text(r.get("eligibility_description")),
            "minimum_age": minimum, "maximum_age": maximum, "updated_at": utcnow(),
        }
        if existing is None:
            values.update(service_types=[], payment_options=[], attributes=[])
        self.put("service", m.Service, values)

    def location(self, r: dict[str, Any]) -> None:
        organization_id = self.maybe(m.Organization, "location", r, "organization_id")
        lat = _number(r.get("latitude"), "latitude")
        lon = _number(r.get("longitude"), "longitude")
        if (lat is None) != (lon is None):
            raise ValueError("latitude and longitude must be given together")
        if lat is not None and lon is not None and not (-90 <= lat <= 90
                                                        and -180 <= lon <= 180):
            self.report.change("location", r, f"latitude/longitude {lat:g}, {lon:g} is outside "
                               "the globe: imported without coordinates")
            lat = lon = None
        kind = (_text(r.get("location_type")) or "physical").lower()
        if kind not in ("physical", "postal", "virtual"):
            raise ValueError(f"location_type {kind!r} is not physical, postal or virtual")
        self.put("location", m.Location, {
            "id": str(r["id"]), "organization_id": organization_id,
            "location_type": kind, "name": _text(r.get("name")),
            "description": _text(r.get("description")),
            "transportation": _text(r.get("transportation")), "latitude": lat,
            "longitude": lon})

    def address(self, r: dict[str, Any]) -> None:
        location_id = self.need(m.Location, r, "location_id")
        kind = (_text(r.get("address_type")) or "physical").lower()
        if kind != "physical":  # a postal (mailing) address does not place a service
            self.report.skip("address", r, f"a {kind} address: only the physical address "
                             "of a location is kept")
            return
        location = self.session.get(m.Location, location_id)
        assert location is not None
        postal = _text(r.get("postal_code"))
        city, state = _text(r.get("city")), _text(r.get("state_province"))
        country = (_text(r.get("country")) or "").upper()[:2] or None
        region_id = None
        try:
            if postal and (country in (None, "US")):
                region_id = by_postal_code(postal).id
            elif city and state:
                region_id = by_city(city, state).id
        except RegionNotFoundError:
            region_id = None
        location.address_1 = _text(r.get("address_1"))
        location.city, location.state_province = city, state
        location.postal_code, location.country, location.region_id = postal, country, region_id
        self.report.imported["address"] += 1

    def service_at_location(self, r: dict[str, Any]) -> None:
        self.put("service_at_location", m.ServiceAtLocation, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "location_id": self.need(m.Location, r, "location_id"),
            "description": _text(r.get("description"))})

    def _owner(self, r: dict[str, Any], allow_none: bool = False) -> dict[str, str | None]:
        owners = {"service_id": self.need(m.Service, r, "service_id", optional=True),
                  "location_id": self.need(m.Location, r, "location_id", optional=True)}
        if "service_at_location_id" in r:
            owners["service_at_location_id"] = self.need(
                m.ServiceAtLocation, r, "service_at_location_id", optional=True)
        if "phone_id" in r:
            owners["phone_id"] = self.need(m.Phone, r, "phone_id", optional=True)
        if not any(owners.values()) and not allow_none:
            raise ValueError("belongs to no service, location or service_at_location")
        return owners

    def phone(self, r: dict[str, Any]) -> None:
        owners = self._owner(r, allow_none=True)
        org = self.need(m.Organization, r, "organization_id", optional=True)
        if not any(owners.values()) and org is None:
            if not _blank(r.get("contact_id")):
                raise ValueError("belongs only to a contact (contacts are not imported)")
            raise ValueError("belongs to no organization, service or location")
        number = str(r["number"]).strip().strip('"').strip()  # the standard's '"+44 ..."'
        digits = re.sub(r"\D", "", number)
        if len(digits) < 7:
            raise ValueError(f"number is not a phone number: {r['number']!r}")
        ext = _text(r.get("extension"))
        self.put("phone", m.Phone, {
            "id": str(r["id"]), **owners, "organization_id": org, "number": number,
            "extension": ext.removesuffix(".0") if ext else None, "type": _text(r.get("type")),
            "description": _text(r.get("description"))})

    def schedule(self, r: dict[str, Any]) -> None:
        owners = self._owner(r)
        freq = (_text(r.get("freq")) or "WEEKLY").upper()
        if freq != "WEEKLY":
            raise ValueError(f"freq {freq!r}: only WEEKLY schedules are supported")
        byday = (_text(r.get("byday")) or "").upper().replace(" ", "")
        bad = [d for d in byday.split(",") if d and d not in DAYS]
        if bad:
            raise ValueError(f"byday has unknown days: {','.join(bad)}")
        self.put("schedule", m.Schedule, {
            "id": str(r["id"]), **owners, "freq": freq, "byday": byday or None,
            "opens_at": _time(r["opens_at"], "opens_at"),
            "closes_at": _time(r["closes_at"], "closes_at"),
            "valid_from": _date(r.get("valid_from"), "valid_from"),
            "valid_to": _date(r.get("valid_to"), "valid_to"),
            "description": _text(r.get("description"))})

    def language(self, r: dict[str, Any]) -> None:
        owners = self._owner(r)
        code = (_text(r.get("code")) or "").lower() or None
        if code is None and _blank(r.get("name")):
            raise ValueError("language has neither code nor name")
        if code is not None and not re.fullmatch(r"[a-z]{2,3}", code):
            raise ValueError(f"code is not an ISO 639 code: {code!r}")
        self.put("language", m.Language, {
            "id": str(r["id"]), "service_id": owners["service_id"],
            "location_id": owners["location_id"], "phone_id": owners.get("phone_id"),
            "name": _text(r.get("name")), "code": code})

    def service_area(self, r: dict[str, Any]) -> None:
        service_id = _text(r.get("service_id"))
        sal_id = self.maybe(m.ServiceAtLocation, "service_area", r, "service_at_location_id") \
            if service_id else self.need(m.ServiceAtLocation, r, "service_at_location_id",
                                         optional=True)
        if service_id is None and sal_id is not None:  # the area of a service at a location
            sal = self.session.get(m.ServiceAtLocation, sal_id)
            service_id = sal.service_id if sal is not None else None
        if service_id is None:
            raise ValueError("belongs to no service or service_at_location")
        self.put("service_area", m.ServiceArea, {
            "id": str(r["id"]), "service_id": self.need(m.Service, {"service_id": service_id},
                                                       "service_id"),
            "name": _text(r.get("name")), "description": _text(r.get("description"))})

    def unit(self, r: dict[str, Any]) -> None:
        self.units[str(r["id"])] = _text(r.get("name"))
        self.unit_rows[str(r["id"])] = r

    def service_capacity(self, r: dict[str, Any]) -> None:
        available = _number(r["available"], "available")
        maximum = _number(r.get("maximum"), "maximum")
        if available is None or available < 0:
            raise ValueError("available must be zero or more")
        unit_id = _text(r.get("unit_id"))
        if unit_id and unit_id not in self.units:
            raise ValueError(f"unit_id {unit_id!r} does not exist")
        updated = _text(r.get("updated"))
        try:
            when = datetime.fromisoformat(updated.replace("Z", "+00:00")) if updated else utcnow()
        except ValueError:
            raise ValueError(f"updated is not a date-time: {updated!r}") from None
        if when.tzinfo is None:
            raise ValueError("updated has no time zone")
        self.put("service_capacity", m.ServiceCapacity, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "unit": self.units.get(unit_id) if unit_id else None, "available": available,
            "maximum": maximum, "description": _text(r.get("description")), "updated": when})
        if unit_id:
            self.used_units.add(unit_id)

    def cost_option(self, r: dict[str, Any]) -> None:
        currency = _text(r.get("currency"))
        if currency and not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise ValueError(f"currency is not an ISO 4217 code: {currency!r}")
        self.put("cost_option", m.CostOption, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "option": _text(r.get("option")), "amount": _number(r.get("amount"), "amount"),
            "currency": currency.upper() if currency else None,
            "amount_description": _text(r.get("amount_description"))})

    def taxonomy_term(self, r: dict[str, Any]) -> None:
        if _blank(r.get("code")) and _blank(r.get("name")):
            raise ValueError("taxonomy term has neither code nor name")
        self.terms[str(r["id"])] = {"code": _text(r.get("code")), "name": _text(r.get("name")),
                                    "taxonomy": _text(r.get("taxonomy"))}
        self.term_rows[str(r["id"])] = r

    def attribute(self, r: dict[str, Any]) -> None:
        entity = (_text(r.get("link_entity")) or "service").lower()
        if entity != "service":
            self.report.skip("attribute", r, f"an attribute of a {entity!r}: only service "
                             "attributes are used (service types, payment)")
            return
        service_id = str(r["link_id"])
        if not self.exists(m.Service, service_id):
            raise ValueError(f"link_id {service_id!r} is not a known service")
        term = self.terms.get(str(r["taxonomy_term_id"]))
        if term is None:
            raise ValueError(f"taxonomy_term_id {r['taxonomy_term_id']!r} does not exist")
        code = term["code"] or term["name"] or ""
        if code_to_type(code) is None and code_to_payment(code) is None:
            raise ValueError(f"taxonomy term {code!r} is neither a known service type nor a "
                             "payment option")
        self.attributes[service_id].append({"id": str(r["id"]), "term_id": str(
            r["taxonomy_term_id"]), **term, "value": _text(r.get("value"))})
        self.used_terms.add(str(r["taxonomy_term_id"]))
        self.report.imported["attribute"] += 1

    def finish(self) -> None:
        """Derive service types and payment options from the imported attributes, and mark
        the directory changed (matching caches it by the services' latest `updated_at`).
        Units and taxonomy terms count as imported when a capacity or an attribute uses
        them (they are kept there); the others are reported."""
        for table, rows, used, user in (
                ("unit", self.unit_rows, self.used_units, "capacity"),
                ("taxonomy_term", self.term_rows, self.used_terms, "service attribute")):
            if used & set(rows):
                self.report.imported[table] += len(used & set(rows))
            for ident, row in rows.items():
                if ident not in used:
                    self.report.skip(table, row, f"used by no imported {user} (kept only "
                                     f"with the {user}s that use it)")
        if any(self.report.imported.values()):
            self.session.execute(update(m.Service).values(updated_at=utcnow()))
        for service_id, attributes in self.attributes.items():
            service = self.session.get(m.Service, service_id)
            assert service is not None
            codes = [a["code"] or a["name"] or "" for a in attributes]
            service.attributes = sorted(attributes, key=lambda a: a["id"])
            service.service_types = sorted({t for c in codes if (t := code_to_type(c))})
            service.payment_options = sorted({p for c in codes if (p := code_to_payment(c))})


def import_rows(session: Session, rows: dict[str, list[dict[str, Any]]]) -> ImportReport:
    report = ImportReport()
    loader = _Loader(session, report)
    for table, records in rows.items():
        if table not in TABLES:
            reason = UNUSED_REASON if table in UNUSED_TABLES else "not an HSDS table"
            for row in records:
                report.skip(table, row, reason)
    for table, (fields, required) in TABLES.items():
        seen: set[str] = set()
        for row in rows.get(table, []):
            missing = [f for f in required if _blank(row.get(f))]
            if missing:
                report.reject(table, row, f"missing required field(s): {', '.join(missing)}")
                continue
            if isinstance(row["id"], (dict, list)):
                report.reject(table, {}, "id is not a string")
                continue
            if str(row["id"]) in seen:
                report.reject(table, row, "duplicate id in this package")
                continue
            seen.add(str(row["id"]))
            row = {k: v.replace("\x00", "") if isinstance(v, str) else v
                   for k, v in row.items()}  # PostgreSQL text cannot hold NUL
            try:  # every check runs before the record touches the session
                getattr(loader, table)({k: row.get(k) for k in fields if k in row}
                                       | {"id": row["id"]})
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                report.reject(table, row, str(exc) if isinstance(exc, ValueError)
                              else f"not a valid record ({exc.__class__.__name__}: {exc})")
        session.flush()
    loader.finish()
    session.flush()
    return report


def import_path(session: Session, path: Path) -> ImportReport:
    """Import a file or package; a file that cannot be read is a report, not an error."""
    from services.referrals.service import invalidate_directory

    problems: list[Rejected] = []
    try:
        rows = read_package(path, problems)
    except (ValueError, OSError, zipfile.BadZipFile, csv.Error) as exc:
        report = ImportReport()
        report.rejected.append(Rejected("file", path.name, f"cannot be read: {exc}"))
        return report
    report = import_rows(session, rows)
    report.rejected[:0] = problems
    invalidate_directory()
    return report


# ---------------------------------------------------------------------------- export

def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: safe_cell(row.get(k)) for k in fields})
    return out.getvalue()


def _fmt(value: Any) -> Any:
    if isinstance(value, float) and value == int(value):
        return int(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def write_package(rows: dict[str, list[dict[str, Any]]], directory: Path) -> Path:
    """Write rows per table as an HSDS tabular data package (CSV + datapackage.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    resources = []
    for table, (fields, _required) in TABLES.items():
        if table not in rows:
            continue
        name = f"{table}.csv"
        (directory / name).write_text(
            _csv([{k: _fmt(v) for k, v in r.items()} for r in rows[table]], fields),
            encoding="utf-8")
        resources.append({"name": table, "path": name, "format": "csv",
                          "schema": {"fields": [{"name": f} for f in fields]}})
    descriptor = {"name": "lookout-referrals-directory", "profile": "tabular-data-package",
                  "hsds_version": "3.0", "resources": resources}
    (directory / "datapackage.json").write_text(json.dumps(descriptor, indent=2),
                                                encoding="utf-8")
    return directory


def export_rows(session: Session) -> dict[str, list[dict[str, Any]]]:
    """The directory as HSDS rows per table (what `write_package` writes)."""
    def cols(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
        return {n: getattr(obj, n, None) for n in names}

    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for org in session.scalars(select(m.Organization).order_by(m.Organization.id)):
        rows["organization"].append(cols(org, TABLES["organization"][0]))
    for svc in session.scalars(select(m.Service).order_by(m.Service.id)):
        rows["service"].append(cols(svc, TABLES["service"][0]))
        for a in svc.attributes:
            rows["taxonomy_term"].append({"id": a["term_id"], "code": a["code"],
                                          "name": a["name"], "taxonomy": a["taxonomy"]})
            rows["attribute"].append({"id": a["id"], "link_id": svc.id,
                                      "link_entity": "service",
                                      "taxonomy_term_id": a["term_id"], "value": a["value"]})
    rows["taxonomy_term"] = list({r["id"]: r for r in rows["taxonomy_term"]}.values())
    for loc in session.scalars(select(m.Location).order_by(m.Location.id)):
        rows["location"].append(cols(loc, TABLES["location"][0]))
        if loc.address_1 or loc.postal_code or loc.city:
            rows["address"].append({**cols(loc, TABLES["address"][0]), "id": f"{loc.id}-address",
                                    "location_id": loc.id, "address_type": "physical"})
    simple: dict[str, Any] = {"service_at_location": m.ServiceAtLocation, "phone": m.Phone,
              "schedule": m.Schedule, "language": m.Language, "service_area": m.ServiceArea,
              "cost_option": m.CostOption}
    for table, model in simple.items():
        for obj in session.scalars(select(model).order_by(model.id)):
            rows[table].append(cols(obj, TABLES[table][0]))
    for cap in session.scalars(select(m.ServiceCapacity).order_by(m.ServiceCapacity.id)):
        unit_id = f"unit-{cap.unit}" if cap.unit else None
        if unit_id and all(u["id"] != unit_id for u in rows["unit"]):
            rows["unit"].append({"id": unit_id, "name": cap.unit})
        rows["service_capacity"].append({**cols(cap, TABLES["service_capacity"][0]),
                                         "unit_id": unit_id})
    return rows
