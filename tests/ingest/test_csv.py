"""CSV uploads: the whole Drug Checking BC export, the generic template, and the page."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.api import app
from services.ingest.models import DrugCheck, OutboxMessage
from services.ingest.service.sites import create_site
from shared.db import session_scope
from shared.regions import get_region
from shared.settings import Settings, get_settings
from shared.substances import parse_ftir_list
from tests.conftest import DATA_DIR, MigratedSqlite
from tests.ingest.conftest import DATA_ROWS, MakeSite, problem

BC_CSV = DATA_DIR / "drugcheckingbc-2018-2020.csv"
STATUSES = {"recognized", "cut_benign", "uncertain", "no_match", "unrecognized"}


def _upload(client: TestClient, auth: dict[str, str], data: bytes) -> dict:
    response = client.post("/v1/drug-checks/csv", headers=auth,
                           files={"file": ("results.csv", data, "text/csv")})
    assert response.status_code in (200, 202), response.text
    return dict(response.json())


@pytest.fixture
def sqlite_client(tmp_path: Path,
                  migrated_sqlite: MigratedSqlite) -> Iterator[tuple[TestClient, Settings]]:
    """The whole 15,300-row file runs on SQLite (PostgreSQL gets a slice below)."""
    url = migrated_sqlite(tmp_path / "bc.db")
    settings = Settings(env="test", database_url=url, var_dir=tmp_path,
                        ingest_rate_per_second=0)
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as client:
        yield client, settings
    app.dependency_overrides.clear()


def test_the_whole_bc_export_imports_and_a_second_upload_is_all_duplicates(
    sqlite_client: tuple[TestClient, Settings],
) -> None:
    ingest_client, ingest_settings = sqlite_client
    data = BC_CSV.read_bytes()
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        _, key = create_site(session, "Drug Checking BC", ["results"])
    auth = {"Authorization": f"Bearer {key}"}

    first = _upload(ingest_client, auth, data)
    assert first["format"] == "drugcheckingbc"
    assert (first["rows"], first["accepted"], first["duplicate"], first["rejected"]) == (
        len(rows), len(rows), 0, 0)

    with session_scope(ingest_settings.sqlalchemy_url) as session:
        events = [e for (e,) in session.execute(select(DrugCheck.event))]
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(DATA_ROWS)) == len(rows)
        published = [json.loads(p) for (p,) in session.execute(
            select(OutboxMessage.payload).where(DATA_ROWS).order_by(OutboxMessage.id))]
    # The export is newest first; its rows go out oldest first (detection takes each
    # partition in the order it comes), file order among rows of the same time.
    assert rows[0]["Date"] > rows[-1]["Date"]
    times = [datetime.fromisoformat(e["collected_at"]) for e in published]
    assert times == sorted(times)
    # every FTIR name in the file is on an event, mapped to the catalog or flagged
    names_in_file = Counter(n for r in rows for n in parse_ftir_list(r["FTIR Spectrometer"]))
    names_on_events = Counter(s["raw"] for e in events for s in e["substances"])
    assert names_on_events == names_in_file
    assert len(names_in_file) >= 262
    for e in events:
        for s in e["substances"]:
            assert s["status"] in STATUSES
            assert (s["substance_id"] is not None) == (
                s["status"] in ("recognized", "cut_benign", "uncertain")), s
    # a row of each kind: mail-in region, noon local time, strips, sold-as, collection site
    by_site = Counter(e["collection_site"] for e in events)
    assert by_site == Counter(r["Site"] for r in rows)
    mail_in = [e for e in events if e["collection_site"] == "GYDT - Mail-in"]
    assert {e["region_id"] for e in mail_in} == {"ca/bc/mail-in"}
    for e in events[:2000]:  # noon, local time of the region (Cranbrook keeps Mountain time)
        zone = ZoneInfo(get_region(e["region_id"]).time_zone)
        collected = datetime.fromisoformat(e["collected_at"])
        assert collected.astimezone(zone).strftime("%H:%M") == "12:00"
        assert collected.utcoffset() == collected.astimezone(zone).utcoffset()
    fentanyl = Counter(e["strips"].get("fentanyl_strip") for e in events)
    assert fentanyl["positive"] == sum(r["Fentanyl Test Strip"] in ("True", "Positive;Negative")
                                       for r in rows)
    assert fentanyl[None] == sum(r["Fentanyl Test Strip"] == "N/A" for r in rows)
    down = [e for e in events if e["sold_as_raw"] == "Down (Unknown Opioid)"]
    assert down and {e["sold_as_class"] for e in down} == {"opioid"}

    second = _upload(ingest_client, auth, data)
    assert (second["accepted"], second["duplicate"], second["rejected"]) == (0, len(rows), 0)
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(DrugCheck)) == len(rows)
        assert session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(DATA_ROWS)) == len(rows)


def test_a_slice_of_the_bc_export_as_a_text_csv_body(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    lines = BC_CSV.read_text().splitlines(keepends=True)[:1501]
    data = "".join(lines).encode()
    auth = make_site("BC slice", ["results"])
    response = ingest_client.post("/v1/drug-checks/csv", content=data,
                                  headers={**auth, "Content-Type": "text/csv"})
    assert response.status_code == 202
    assert (response.json()["accepted"], response.json()["rejected"]) == (1500, 0)
    again = ingest_client.post("/v1/drug-checks/csv", content=data,
                               headers={**auth, "Content-Type": "text/csv"}).json()
    assert again["duplicate"] == 1500


GENERIC = """sample_id,collected_at,postal_code,city,state,sold_as,substances,fentanyl_strip,notes
g-1,2026-03-01T10:00:00-08:00,98104,,,cocaine,Cocaine HCl;Fentanyl HCl,positive,
g-2,2026-03-01,,Vancouver,BC,Down (Unknown Opioid),Fentanyl HCl;Caffeine,True,
g-3,2026-03-01T10:00:00,98104,,,heroin,,,
g-4,2026-03-01T10:00:00Z,00000,,,heroin,,,
g-5,2026-03-01T10:00:00Z,98104,,,heroin,,maybe,
g-6,2026-03-01T10:00:00Z,98104,,,heroin,,,call 206-555-0100
g-7,2026-03-01T10:00:00Z,98104,,,heroin
g-1,2026-03-01T10:00:00-08:00,98104,,,cocaine,Cocaine HCl;Fentanyl HCl,positive,
g-1,2026-03-01T10:00:00-08:00,98104,,,heroin,,positive,
"""


def test_the_generic_template_reports_each_rejected_row_by_line(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    out = _upload(ingest_client, make_site("A", ["results"]), GENERIC.encode())
    assert out["format"] == "generic"
    assert (out["rows"], out["accepted"], out["duplicate"], out["rejected"]) == (9, 2, 1, 6)
    rejected = {r["line"]: r for r in out["rejected_rows"]}
    assert {line: r["reason"] for line, r in rejected.items()} == {
        4: "validation", 5: "location", 6: "validation", 7: "validation", 8: "validation",
        10: "conflict"}
    assert rejected[4]["errors"][0]["field"] == "/collected_at"
    assert rejected[6]["errors"][0]["field"] == "/fentanyl_strip"
    assert rejected[7]["errors"][0]["field"] == "/notes"
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        events = {e["sample_id"]: e for (e,) in session.execute(select(DrugCheck.event))}
    assert events["g-2"]["collected_at"] == "2026-03-01T12:00:00-08:00"  # noon in Vancouver
    assert events["g-2"]["sold_as_class"] == "opioid"
    assert events["g-1"]["strips"] == {"fentanyl_strip": "positive"}
    assert {s["substance_id"] for s in events["g-1"]["substances"]} == {"cocaine", "fentanyl"}


@pytest.mark.parametrize("data", [b"", b"a,b,c\n1,2,3\n"])
def test_an_unknown_csv_header_is_a_422_problem(
    ingest_client: TestClient, make_site: MakeSite, data: bytes
) -> None:
    response = ingest_client.post("/v1/drug-checks/csv", content=data,
                                  headers={**make_site("A"), "Content-Type": "text/csv"})
    assert response.status_code == 422
    assert problem(response)["errors"][0]["field"] == "/file"


def test_csv_uploads_have_their_own_size_limit(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    auth = make_site("A")
    big = BC_CSV.read_bytes()  # 1.5 MB: over the JSON limit, under the CSV one
    assert len(big) > ingest_settings.ingest_max_json_bytes
    ingest_settings.ingest_max_csv_bytes = len(big) - 1
    response = ingest_client.post("/v1/drug-checks/csv", headers=auth,
                                  files={"file": ("bc.csv", big, "text/csv")})
    assert response.status_code == 413
    problem(response)


def test_the_upload_page_imports_a_file_and_shows_the_result(
    ingest_client: TestClient, ingest_settings: Settings, make_site: MakeSite
) -> None:
    key = make_site("A", ["results"])["Authorization"].split()[1]
    page = ingest_client.get("/upload")
    assert page.status_code == 200
    assert 'name="api_key"' in page.text and 'name="file"' in page.text
    done = ingest_client.post("/upload", data={"api_key": key},
                              files={"file": ("g.csv", GENERIC.encode(), "text/csv")})
    assert done.status_code == 200
    assert '<td id="accepted">2</td>' in done.text
    assert '<td id="rejected">6</td>' in done.text
    assert "<td>10</td><td>conflict</td>" in done.text
    wrong = ingest_client.post("/upload", data={"api_key": "lk_nope"},
                               files={"file": ("g.csv", GENERIC.encode(), "text/csv")})
    assert wrong.status_code == 401
    assert 'id="error"' in wrong.text
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(DrugCheck)) == 2


def test_the_example_template_in_the_docs_imports(
    ingest_client: TestClient, make_site: MakeSite
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()
    block = doc.split("```csv\n", 1)[1].split("```", 1)[0]
    out = _upload(ingest_client, make_site("A", ["results"]), block.encode())
    assert out["rejected"] == 0 and out["accepted"] == out["rows"] > 0
