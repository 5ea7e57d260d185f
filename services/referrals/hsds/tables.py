"""The HSDS tables Lookout reads (their fields, the required ones, the load order), the
field rules every record is checked against, and the import's report."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

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



def is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def as_text(value: Any) -> str | None:
    return None if is_blank(value) else str(value).strip()


def as_number(value: Any, what: str) -> float | None:
    if is_blank(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None


def as_whole(value: Any, what: str) -> int | None:
    number = as_number(value, what)
    if number is None:
        return None
    if number != int(number) or number < 0:
        raise ValueError(f"{what} is not a whole number of years: {value!r}")
    return int(number)


def as_date(value: Any, what: str) -> date | None:
    if is_blank(value):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ValueError(f"{what} is not a YYYY-MM-DD date: {value!r}") from None


def as_time(value: Any, what: str) -> str:
    text = str(value).strip()
    if not TIME_RE.match(text):
        raise ValueError(f"{what} is not HH:MM (with an optional UTC offset): {value!r}")
    return text

