"""Loading rows into the directory: every record validated, bad ones rejected with a
reason, the rest upserted by id (importing the same package twice changes nothing)."""

from __future__ import annotations

import csv
import re
import zipfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals.hsds.reading import read_package
from services.referrals.hsds.tables import (
    SERVICE_STATUS,
    TABLES,
    UNUSED_REASON,
    UNUSED_TABLES,
    ImportReport,
    Rejected,
    as_date,
    as_number,
    as_text,
    as_time,
    as_whole,
    is_blank,
)
from services.referrals.matching import DAYS, code_to_payment, code_to_type
from shared.db import utcnow
from shared.regions import RegionNotFoundError, by_city, by_postal_code


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
        if is_blank(ident):
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
        if is_blank(value):
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
        if is_blank(value):
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
            "id": str(r["id"]), "name": str(r["name"]),
            "description": as_text(r.get("description")), "email": as_text(r.get("email")),
            "website": as_text(r.get("website"))})

    def service(self, r: dict[str, Any]) -> None:
        org = self.need(m.Organization, r, "organization_id")
        status = (as_text(r.get("status")) or "active").lower()
        if status not in SERVICE_STATUS:
            raise ValueError(f"status {status!r} is not one of {sorted(SERVICE_STATUS)}")
        minimum = as_whole(r.get("minimum_age"), "minimum_age")
        maximum = as_whole(r.get("maximum_age"), "maximum_age")
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ValueError("minimum_age is above maximum_age")
        existing = self.session.get(m.Service, str(r["id"]))
        values: dict[str, Any] = {
            "id": str(r["id"]), "organization_id": org, "name": str(r["name"]),
            "description": as_text(r.get("description")), "url": as_text(r.get("url")),
            "email": as_text(r.get("email")), "status": status,
            "interpretation_services": as_text(r.get("interpretation_services")),
            "fees_description": as_text(r.get("fees_description")),
            "eligibility_description": as_text(r.get("eligibility_description")),
            "minimum_age": minimum, "maximum_age": maximum, "updated_at": utcnow(),
        }
        if existing is None:
            values.update(service_types=[], payment_options=[], attributes=[])
        self.put("service", m.Service, values)

    def location(self, r: dict[str, Any]) -> None:
        organization_id = self.maybe(m.Organization, "location", r, "organization_id")
        lat = as_number(r.get("latitude"), "latitude")
        lon = as_number(r.get("longitude"), "longitude")
        if (lat is None) != (lon is None):
            raise ValueError("latitude and longitude must be given together")
        if lat is not None and lon is not None and not (-90 <= lat <= 90
                                                        and -180 <= lon <= 180):
            self.report.change("location", r, f"latitude/longitude {lat:g}, {lon:g} is outside "
                               "the globe: imported without coordinates")
            lat = lon = None
        kind = (as_text(r.get("location_type")) or "physical").lower()
        if kind not in ("physical", "postal", "virtual"):
            raise ValueError(f"location_type {kind!r} is not physical, postal or virtual")
        self.put("location", m.Location, {
            "id": str(r["id"]), "organization_id": organization_id,
            "location_type": kind, "name": as_text(r.get("name")),
            "description": as_text(r.get("description")),
            "transportation": as_text(r.get("transportation")), "latitude": lat,
            "longitude": lon})

    def address(self, r: dict[str, Any]) -> None:
        location_id = self.need(m.Location, r, "location_id")
        kind = (as_text(r.get("address_type")) or "physical").lower()
        if kind != "physical":  # a postal (mailing) address does not place a service
            self.report.skip("address", r, f"a {kind} address: only the physical address "
                             "of a location is kept")
            return
        location = self.session.get(m.Location, location_id)
        assert location is not None
        postal = as_text(r.get("postal_code"))
        city, state = as_text(r.get("city")), as_text(r.get("state_province"))
        country = (as_text(r.get("country")) or "").upper()[:2] or None
        region_id = None
        try:
            if postal and (country in (None, "US")):
                region_id = by_postal_code(postal).id
            elif city and state:
                region_id = by_city(city, state).id
        except RegionNotFoundError:
            region_id = None
        location.address_1 = as_text(r.get("address_1"))
        location.city, location.state_province = city, state
        location.postal_code, location.country, location.region_id = postal, country, region_id
        self.report.imported["address"] += 1

    def service_at_location(self, r: dict[str, Any]) -> None:
        self.put("service_at_location", m.ServiceAtLocation, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "location_id": self.need(m.Location, r, "location_id"),
            "description": as_text(r.get("description"))})

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
            if not is_blank(r.get("contact_id")):
                raise ValueError("belongs only to a contact (contacts are not imported)")
            raise ValueError("belongs to no organization, service or location")
        number = str(r["number"]).strip().strip('"').strip()  # the standard's '"+44 ..."'
        digits = re.sub(r"\D", "", number)
        if len(digits) < 7:
            raise ValueError(f"number is not a phone number: {r['number']!r}")
        ext = as_text(r.get("extension"))
        self.put("phone", m.Phone, {
            "id": str(r["id"]), **owners, "organization_id": org, "number": number,
            "extension": ext.removesuffix(".0") if ext else None, "type": as_text(r.get("type")),
            "description": as_text(r.get("description"))})

    def schedule(self, r: dict[str, Any]) -> None:
        owners = self._owner(r)
        freq = (as_text(r.get("freq")) or "WEEKLY").upper()
        if freq != "WEEKLY":
            raise ValueError(f"freq {freq!r}: only WEEKLY schedules are supported")
        byday = (as_text(r.get("byday")) or "").upper().replace(" ", "")
        bad = [d for d in byday.split(",") if d and d not in DAYS]
        if bad:
            raise ValueError(f"byday has unknown days: {','.join(bad)}")
        self.put("schedule", m.Schedule, {
            "id": str(r["id"]), **owners, "freq": freq, "byday": byday or None,
            "opens_at": as_time(r["opens_at"], "opens_at"),
            "closes_at": as_time(r["closes_at"], "closes_at"),
            "valid_from": as_date(r.get("valid_from"), "valid_from"),
            "valid_to": as_date(r.get("valid_to"), "valid_to"),
            "description": as_text(r.get("description"))})

    def language(self, r: dict[str, Any]) -> None:
        owners = self._owner(r)
        code = (as_text(r.get("code")) or "").lower() or None
        if code is None and is_blank(r.get("name")):
            raise ValueError("language has neither code nor name")
        if code is not None and not re.fullmatch(r"[a-z]{2,3}", code):
            raise ValueError(f"code is not an ISO 639 code: {code!r}")
        self.put("language", m.Language, {
            "id": str(r["id"]), "service_id": owners["service_id"],
            "location_id": owners["location_id"], "phone_id": owners.get("phone_id"),
            "name": as_text(r.get("name")), "code": code})

    def service_area(self, r: dict[str, Any]) -> None:
        service_id = as_text(r.get("service_id"))
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
            "name": as_text(r.get("name")), "description": as_text(r.get("description"))})

    def unit(self, r: dict[str, Any]) -> None:
        self.units[str(r["id"])] = as_text(r.get("name"))
        self.unit_rows[str(r["id"])] = r

    def service_capacity(self, r: dict[str, Any]) -> None:
        available = as_number(r["available"], "available")
        maximum = as_number(r.get("maximum"), "maximum")
        if available is None or available < 0:
            raise ValueError("available must be zero or more")
        unit_id = as_text(r.get("unit_id"))
        if unit_id and unit_id not in self.units:
            raise ValueError(f"unit_id {unit_id!r} does not exist")
        updated = as_text(r.get("updated"))
        try:
            when = datetime.fromisoformat(updated.replace("Z", "+00:00")) if updated else utcnow()
        except ValueError:
            raise ValueError(f"updated is not a date-time: {updated!r}") from None
        if when.tzinfo is None:
            raise ValueError("updated has no time zone")
        self.put("service_capacity", m.ServiceCapacity, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "unit": self.units.get(unit_id) if unit_id else None, "available": available,
            "maximum": maximum, "description": as_text(r.get("description")), "updated": when})
        if unit_id:
            self.used_units.add(unit_id)

    def cost_option(self, r: dict[str, Any]) -> None:
        currency = as_text(r.get("currency"))
        if currency and not re.fullmatch(r"[A-Za-z]{3}", currency):
            raise ValueError(f"currency is not an ISO 4217 code: {currency!r}")
        self.put("cost_option", m.CostOption, {
            "id": str(r["id"]), "service_id": self.need(m.Service, r, "service_id"),
            "option": as_text(r.get("option")), "amount": as_number(r.get("amount"), "amount"),
            "currency": currency.upper() if currency else None,
            "amount_description": as_text(r.get("amount_description"))})

    def taxonomy_term(self, r: dict[str, Any]) -> None:
        if is_blank(r.get("code")) and is_blank(r.get("name")):
            raise ValueError("taxonomy term has neither code nor name")
        self.terms[str(r["id"])] = {"code": as_text(r.get("code")), "name": as_text(r.get("name")),
                                    "taxonomy": as_text(r.get("taxonomy"))}
        self.term_rows[str(r["id"])] = r

    def attribute(self, r: dict[str, Any]) -> None:
        entity = (as_text(r.get("link_entity")) or "service").lower()
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
            r["taxonomy_term_id"]), **term, "value": as_text(r.get("value"))})
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
            missing = [f for f in required if is_blank(row.get(f))]
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

