"""HSDS 3.0 import: a hand-written package (CSV + datapackage.json, and nested JSON), the
rejected records and why, idempotence, and an export -> import round trip."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from services.referrals import models as m
from services.referrals.hsds import export_rows, import_path, write_package
from shared.db import session_scope
from shared.settings import Settings
from tests.conftest import MigratedSqlite

DATA = Path(__file__).parent / "data"
CSV_PACKAGE = DATA / "hsds_csv"
JSON_SERVICES = DATA / "hsds_services.json"
EXPECTED_REJECTIONS = {
    ("organization", "?"): "missing required field(s): id",
    ("service", "svc-orphan"): "organization_id 'org-missing' does not exist",
    ("service", "svc-noname"): "missing required field(s): name",
    ("service", "svc-badstatus"): "status 'paused'",
    ("phone", "ph-bad"): "not a phone number",
    ("schedule", "sch-bad-time"): "opens_at is not HH:MM",
    ("schedule", "sch-bad-day"): "unknown days: XX",
    ("schedule", "sch-monthly"): "only WEEKLY",
    ("language", "lang-bad"): "not an ISO 639 code",
    ("service_area", "area-orphan"): "service_id 'svc-missing' does not exist",
    ("service_capacity", "cap-bad"): "available must be zero or more",
    ("attribute", "at-12"): "neither a known service type nor a payment option",
    ("attribute", "at-13"): "taxonomy_term_id 'tt-missing' does not exist",
}


def import_sample(url: str) -> None:
    with session_scope(url) as session:
        import_path(session, CSV_PACKAGE)
        import_path(session, JSON_SERVICES)


def test_csv_package_imports_good_records_and_reports_bad_ones(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        report = import_path(session, CSV_PACKAGE)
    assert report.imported["organization"] == 4
    assert report.imported["service"] == 5
    assert report.imported["service_at_location"] == 6  # sal-bad: at loc-bad, now kept
    assert report.imported["schedule"] == 5
    rejected = {(r.table, r.id): r.reason for r in report.rejected}
    assert set(rejected) == set(EXPECTED_REJECTIONS)
    for key, fragment in EXPECTED_REJECTIONS.items():
        assert fragment in rejected[key], (key, rejected[key])
    assert "rejected: 13" in report.summary()
    # A coordinate outside the globe: the location is kept without it, and said so.
    assert [(r.table, r.id) for r in report.changed] == [("location", "loc-bad")]
    assert "outside the globe: imported without coordinates" in report.summary()

    with session_scope(settings.sqlalchemy_url) as session:
        bup = session.get(m.Service, "svc-harbor-bup")
        assert bup is not None
        assert bup.service_types == ["buprenorphine"]
        assert bup.payment_options == ["medicaid", "sliding_fee"]
        assert bup.minimum_age == 16
        loc = session.get(m.Location, "loc-harbor")
        assert loc is not None
        assert (loc.region_id, loc.postal_code) == ("us/wa/king-county/98104", "98104")
        assert session.get(m.Service, "svc-orphan") is None
        bad = session.get(m.Location, "loc-bad")
        assert bad is not None and (bad.latitude, bad.longitude) == (None, None)
        cap = session.get(m.ServiceCapacity, "cap-harbor-res")
        assert cap is not None and (cap.available, cap.unit) == (0, "bed")
        north = session.get(m.Schedule, "sch-north")
        assert north is not None and north.byday == "MO,TU,WE,TH,FR,SA"
        assert str(north.valid_to) == "2027-12-31"


def test_nested_json_services_import(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        report = import_path(session, JSON_SERVICES)
    assert [(r.table, r.id) for r in report.rejected] == [("schedule", "sch-broken")]
    with session_scope(settings.sqlalchemy_url) as session:
        ssp = session.get(m.Service, "svc-ssp")
        assert ssp is not None
        assert ssp.organization_id == "org-ssp"
        assert ssp.service_types == ["naloxone", "syringe_services"]
        assert ssp.payment_options == ["free"]
        sal = session.get(m.ServiceAtLocation, "sal-ssp")
        assert sal is not None and sal.location_id == "loc-ssp"
        cap = session.get(m.ServiceCapacity, "cap-ssp")
        assert cap is not None and cap.unit == "kit"
        sched = session.get(m.Schedule, "sch-ssp")
        assert sched is not None and sched.opens_at == "12:00-08:00"


def _snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    with session_scope(url) as session:
        rows = export_rows(session)
    # `updated_at` is the import time; everything else must survive the trip.
    for row in rows["service"]:
        row.pop("updated_at", None)
    return {table: sorted(r, key=lambda x: str(x["id"])) for table, r in rows.items()}


def test_round_trip_export_then_import_gives_the_same_directory(
        settings: Settings, tmp_path: Path, migrated_sqlite: MigratedSqlite) -> None:
    import_sample(settings.sqlalchemy_url)
    before = _snapshot(settings.sqlalchemy_url)
    package = write_package(before, tmp_path / "exported")
    assert (package / "datapackage.json").exists()

    other = migrated_sqlite(tmp_path / "other.db")
    with session_scope(other) as session:
        report = import_path(session, package)
    assert report.rejected == []
    after = _snapshot(other)
    assert after == before
    assert len(after["service"]) == 7 and len(after["schedule"]) == 6


def test_reimport_is_idempotent_and_a_zip_works(settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "package.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in CSV_PACKAGE.iterdir():
            zf.write(file, f"directory/{file.name}")
    for _ in range(2):
        with session_scope(settings.sqlalchemy_url) as session:
            report = import_path(session, archive)
        assert report.imported["service"] == 5
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(m.Service)) == 5
        assert session.scalar(select(func.count()).select_from(m.Schedule)) == 5


def test_an_unsafe_zip_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.csv", "id\n1\n")
    from services.referrals.hsds import read_package

    try:
        read_package(archive)
    except ValueError as exc:
        assert "unsafe path" in str(exc)
    else:
        raise AssertionError("an archive escaping its directory was accepted")
