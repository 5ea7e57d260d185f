"""Export: the directory as HSDS rows per table, and a tabular data package of them."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals.hsds.tables import TABLES
from shared.csvexport import safe_cell


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
