"""The Open Referral HSDS standard's own examples (v3.0 and 3.1-dev, `data/hsds_examples/`,
CC BY-SA 4.0, see SOURCE.md there): every file imports, or is reported, without a
traceback; nested records are taken once; what Lookout does not keep is reported with its
reason; and an export re-imports to the same counts."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from services.referrals import models as m
from services.referrals.hsds import (
    ImportReport,
    Rejected,
    export_rows,
    import_path,
    write_package,
)
from shared.db import session_scope
from shared.settings import Settings
from tests.conftest import MigratedSqlite

EXAMPLES = Path(__file__).parent / "data" / "hsds_examples"
REFS = ("v3.0", "3.1-dev")
NESTED = ("service_full.json", "organization_full.json", "service_at_location_full.json",
          "location.json")
# The ids the examples share: one phone, schedule and language nested under the service,
# its location, its service_at_location, the organization and a contact.
PHONE = "1554f2e2-a373-45db-a3fa-9fc48a61c15e"
LANGUAGE = "2989d3ed-c547-48f8-8f9d-432d81c7892e"
SCHEDULE = "48102e86-bb50-41c4-8f1e-e269368c41d1"
LOCATION = "3a19ff88-4620-4d17-9830-ac1d859eb5d5"
SERVICE = "ac148810-d857-441c-9679-408f346de14b"
ADDRESS = "74706e55-df26-4b84-80fe-ecc30b5befb4"
EVERY_FILE = [pytest.param(ref, p.relative_to(EXAMPLES / ref).as_posix(), id=f"{ref}/{p.name}")
              for ref in REFS for p in [*sorted((EXAMPLES / ref).glob("*.json")),
                                        EXAMPLES / ref / "csv"]]


def _import(url: str, path: Path) -> ImportReport:
    with session_scope(url) as session:
        return import_path(session, path)


@pytest.fixture
def fresh(migrated_sqlite: MigratedSqlite, tmp_path: Path) -> Callable[[str], str]:
    """A migrated SQLite database per name, copied from the session's template."""
    def make(name: str) -> str:
        return migrated_sqlite(tmp_path / f"{name}.db")
    return make


def _ids(records: list[Rejected]) -> set[tuple[str, str]]:
    return {(r.table, r.id) for r in records}


@pytest.mark.parametrize(("ref", "name"), EVERY_FILE)
def test_every_example_imports_or_is_reported_without_a_traceback(
        ref: str, name: str, fresh: Callable[[str], str]) -> None:
    report = _import(fresh("one"), EXAMPLES / ref / name)
    text = report.summary()
    assert "duplicate id" not in text and "belongs to no" not in text, text
    if name == "base.json":  # the API's description of itself: no directory records
        assert [(r.table, r.reason) for r in report.rejected] == [
            ("file", "not an HSDS service, organization, location, service_at_location or "
                     "taxonomy term")]
        return
    assert sum(report.imported.values()) + len(report.skipped) > 0, text
    # Only the standard's own broken references in the tabular examples are rejected.
    for rejected in report.rejected:
        assert (ref, name, rejected.table) == ("3.1-dev", "csv", "service_capacity"), text
        assert "does not exist" in rejected.reason


@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("name", NESTED)
def test_nested_records_are_taken_once_with_all_their_parents(
        ref: str, name: str, settings: Settings) -> None:
    report = _import(settings.sqlalchemy_url, EXAMPLES / ref / name)
    assert report.rejected == [], report.summary()
    for table in ("phone", "schedule", "language", "location"):
        assert report.imported[table] == 1, (table, report.summary())
    # The coordinate (100, 101) is off the globe: the location is kept without it.
    assert _ids(report.changed) == {("location", LOCATION)}
    assert "outside the globe" in report.changed[0].reason
    skipped = {(r.table, r.id): r.reason for r in report.skipped}
    assert "postal address" in skipped[("address", ADDRESS)]
    assert "not used by Lookout" in skipped[("contact", "1e7efce3-639b-4880-940c-b95cd30cdb50")]
    with session_scope(settings.sqlalchemy_url) as session:
        location = session.get(m.Location, LOCATION)
        assert location is not None and location.name == "MyCity Civic Center"
        assert (location.latitude, location.longitude) == (None, None)
        phone = session.get(m.Phone, PHONE)
        assert phone is not None and phone.number == "+44 1234 234567"
        assert phone.location_id == LOCATION
        language = session.get(m.Language, LANGUAGE)
        assert language is not None and language.phone_id == PHONE  # a phone's language
        assert language.location_id == LOCATION
        schedule = session.get(m.Schedule, SCHEDULE)
        assert schedule is not None and schedule.byday == "TH,FR"
        assert schedule.opens_at in ("10:00", "10:00:00")  # as each example writes it
        if name != "location.json":
            assert phone.service_id == SERVICE and language.service_id == SERVICE
            assert session.get(m.Service, SERVICE) is not None
            assert session.scalars(select(m.ServiceAtLocation)).one().location_id == LOCATION


@pytest.mark.parametrize("ref", REFS)
def test_list_files_are_recognised_by_their_shape(ref: str,
                                                  fresh: Callable[[str], str]) -> None:
    organizations = _import(fresh("orgs"), EXAMPLES / ref / "organization_list.json")
    assert dict(organizations.imported) == {"organization": 1}
    assert organizations.rejected == [] and organizations.skipped == []
    terms = _import(fresh("terms"), EXAMPLES / ref / "taxonomy_term_list.json")
    assert terms.rejected == []
    assert ("taxonomy_term", "3f7b145d-84af-42d7-8fae-eaca714b02b2") in _ids(terms.skipped)
    places = _import(fresh("sal"), EXAMPLES / ref / "service_at_location_list.json")
    assert places.rejected == [] and places.imported["service_at_location"] == 1


@pytest.mark.parametrize("ref", REFS)
@pytest.mark.parametrize("name", [*NESTED, "csv"])
def test_an_export_reimports_to_the_same_counts(ref: str, name: str, tmp_path: Path,
                                                fresh: Callable[[str], str]) -> None:
    first_url = fresh("first")
    first = _import(first_url, EXAMPLES / ref / name)
    with session_scope(first_url) as session:
        package = write_package(export_rows(session), tmp_path / "exported")
    second = _import(fresh("second"), package)
    assert second.rejected == [], second.summary()
    assert {t: n for t, n in second.imported.items() if n} == {
        t: n for t, n in first.imported.items() if n}


def test_a_bad_file_is_a_report_not_a_traceback(tmp_path: Path,
                                                fresh: Callable[[str], str]) -> None:
    url = fresh("bad")
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "svc-1", "name": ')
    not_zip = tmp_path / "package.zip"
    not_zip.write_bytes(b"not a zip")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps([{"id": "x", "name": "?"},
                               {"id": ["a"], "name": "N", "organization_id": "o",
                                "status": "active"},
                               {"id": "s", "name": "S", "status": "active",
                                "organization": {"id": "o", "name": "O"},
                                "phones": [{"id": "p", "number": {"nested": 1}}]}, 7]))
    for path, expected in ((broken, "not valid JSON"), (not_zip, "cannot be read"),
                           (tmp_path / "missing.csv", "cannot be read")):
        report = _import(url, path)
        [rejected] = report.rejected
        assert rejected.table == "file" and expected in rejected.reason, report.summary()
    report = _import(url, odd)
    reasons = {(r.table, r.id): r.reason for r in report.rejected}
    assert "not an HSDS service" in reasons[("file", "odd.json#1 x")]
    assert "not an HSDS service" in reasons[("file", "odd.json#4")]
    assert reasons[("service", "?")] == "missing required field(s): id"  # a list is no id
    assert "number" in reasons[("phone", "p")]
    assert report.imported["service"] == 1  # the good record still goes in
    archive = tmp_path / "package2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("datapackage.json", "{not json")
        zf.writestr("organizations.csv", "id,name\norg-z,Zed\n")
    zipped = _import(url, archive)
    assert zipped.imported["organization"] == 1
    assert "not valid JSON" in zipped.rejected[0].reason
