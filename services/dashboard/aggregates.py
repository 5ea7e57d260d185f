"""The read model's aggregates (`models.Region`, `ReportDay`, `SampleDay`, `FoundDay`),
counted as results and reports are applied, so a page reads a few hundred sums instead of
every row of a year.

A batch's counts are gathered in memory and added at its end with one upsert per table
(`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n`, on SQLite and PostgreSQL):
atomic, so several workers may add to one row. They are counted in the same transaction
as the event ids (`dashboard_processed_events`), so an event counts once; a rebuild
empties them with the rest of the read model. Canary traffic is never counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.dashboard import models
from shared.db import Base
from shared.events import DrugCheckResultV1, OverdoseReportV1
from shared.substances import HIGH_RISK, get_substance


def county_of(region_id: str) -> str:
    return "/".join(region_id.split("/")[:3])


def state_of(region_id: str) -> str:
    return "/".join(region_id.split("/")[:2])


def substance_name(substance_id: str | None) -> str:
    if substance_id is None:
        return "unknown"
    try:
        return get_substance(substance_id).name
    except KeyError:
        return substance_id


def found_names(substances: Iterable[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    """A sample's distinct (name, substance id or "") found, each with whether it is of a
    high-risk substance."""
    out: dict[tuple[str, str], bool] = {}
    for f in substances:
        sid = f.get("substance_id") or ""
        name = substance_name(sid) if sid else str(f.get("raw", ""))
        high = bool(sid) and (f.get("risk") or 0) >= HIGH_RISK
        out[name, sid] = out.get((name, sid), False) or high
    return out


class Counts:
    """One batch's counts, added to the tables by `add_to`."""

    def __init__(self) -> None:
        self.regions: dict[str, list[Any]] = {}  # region_id -> [name, reports, results]
        self.report_days: Counter[tuple[date, str, str, str]] = Counter()
        self.sample_days: dict[tuple[date, str, str], list[int]] = {}
        self.found_days: dict[tuple[date, str, str, str, str], list[int]] = {}

    def _region(self, region_id: str, name: str, reports: int, results: int) -> None:
        row = self.regions.setdefault(region_id, [name, 0, 0])
        row[0] = name
        row[1] += reports
        row[2] += results

    def report(self, e: OverdoseReportV1) -> None:
        self._region(e.region_id, e.region_name, 1, 0)
        self.report_days[e.occurred_at.date(), e.region_id, e.source, e.fatal] += 1

    def result(self, e: DrugCheckResultV1) -> None:
        if e.canary:
            return
        self._region(e.region_id, e.region_name, 0, 1)
        day, sold_as = e.collected_at.date(), e.sold_as_id or ""
        found = found_names(s.model_dump() for s in e.substances)
        counts = self.sample_days.setdefault((day, e.region_id, sold_as), [0, 0, 0])
        counts[0] += 1
        counts[1] += bool(sold_as) and any(sid == sold_as for _name, sid in found)
        counts[2] += any(found.values())
        for (name, sid), high in found.items():
            row = self.found_days.setdefault((day, e.region_id, sold_as, name[:200], sid),
                                             [0, 0])
            row[0] += 1
            row[1] = row[1] or high

    def add_to(self, session: Session) -> None:
        if self.regions:
            _upsert(session, models.Region, ["region_id"], [
                {"region_id": rid, "region_name": name, "reports": reports,
                 "results": results} for rid, (name, reports, results) in self.regions.items()],
                add=["reports", "results"], replace=["region_name"])
        if self.report_days:
            _upsert(session, models.ReportDay, ["day", "region_id", "source", "fatal"], [
                {"day": day, "region_id": rid, "source": source, "fatal": fatal,
                 "county_id": county_of(rid), "state_id": state_of(rid), "reports": n}
                for (day, rid, source, fatal), n in self.report_days.items()],
                add=["reports"])
        if self.sample_days:
            _upsert(session, models.SampleDay, ["day", "region_id", "sold_as_id"], [
                {"day": day, "region_id": rid, "sold_as_id": sold_as,
                 "county_id": county_of(rid), "state_id": state_of(rid), "samples": n,
                 "matched": matched, "high_risk": high}
                for (day, rid, sold_as), (n, matched, high) in self.sample_days.items()],
                add=["samples", "matched", "high_risk"])
        if self.found_days:
            _upsert(session, models.FoundDay,
                    ["day", "region_id", "sold_as_id", "name", "substance_id"], [
                        {"day": day, "region_id": rid, "sold_as_id": sold_as, "name": name,
                         "substance_id": sid, "high_risk": bool(high),
                         "county_id": county_of(rid), "state_id": state_of(rid), "samples": n}
                        for (day, rid, sold_as, name, sid), (n, high)
                        in self.found_days.items()],
                    add=["samples"])


def _upsert(session: Session, model: type[Base], keys: list[str],
            rows: list[dict[str, Any]], add: list[str], replace: tuple[str, ...] | list[str]
            = ()) -> None:
    """Insert `rows`, or add their `add` columns to the row already there."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model)
    table = model.__table__
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={
        **{c: table.c[c] + stmt.excluded[c] for c in add},
        **{c: stmt.excluded[c] for c in replace}})
    session.execute(stmt, rows)
