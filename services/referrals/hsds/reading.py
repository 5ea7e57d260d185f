"""Reading an HSDS input into rows per table: a tabular data package (a directory or
.zip, `datapackage.json` or bare `<table>.csv` files), or JSON service objects with their
nested records, flattened."""

from __future__ import annotations

import csv
import json
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from services.referrals.hsds.tables import TABLES, UNUSED_TABLES, Rejected, is_blank
from shared.csvexport import unescape_cell


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
        if is_blank(ident) or isinstance(ident, (dict, list)):
            rows[table].append(row)  # rejected on import: no id
            return row
        first = by_id[table].get(str(ident))
        if first is None:
            by_id[table][str(ident)] = row
            rows[table].append(row)
            return row
        for key, value in row.items():  # the same record again: its parents add up
            if is_blank(first.get(key)):
                first[key] = value
            elif key.endswith("_id") or key in LINK_KEYS or is_blank(value):
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

