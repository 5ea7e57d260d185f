"""The CSV upload page in a real browser (Debian's chromium driven by playwright) against the
ingest app served by a real uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import func, select

from services.ingest.api import app
from services.ingest.models import DrugCheck
from shared.db import session_scope
from shared.settings import Settings, get_settings
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium, served_app
from tests.ingest.conftest import MakeSite
from tests.ingest.test_csv import GENERIC


@pytest.fixture
def served(ingest_settings: Settings) -> Iterator[str]:
    require_chromium()
    app.dependency_overrides[get_settings] = lambda: ingest_settings
    try:
        with served_app(app) as base:
            yield base
    finally:
        app.dependency_overrides.clear()


def test_staff_upload_a_csv_in_the_browser_and_see_the_result(
    served: str, make_site: MakeSite, tmp_path: Path
) -> None:
    key = make_site("browser site", ["results"])["Authorization"].split()[1]
    csv_file = tmp_path / "results.csv"
    csv_file.write_text(GENERIC)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{served}/upload", timeout=20_000)
            page.fill("#api_key", key)
            page.set_input_files("#file", str(csv_file))
            page.click("#submit")
            page.wait_for_selector("#summary", timeout=20_000)
            assert page.inner_text("#accepted") == "2"
            assert page.inner_text("#rejected") == "6"
            assert "conflict" in page.inner_text("#rejected-rows")
            # the same file again: nothing new
            page.fill("#api_key", key)
            page.set_input_files("#file", str(csv_file))
            page.click("#submit")
            page.wait_for_selector("#summary", timeout=20_000)
            assert page.inner_text("#accepted") == "0"
            assert page.inner_text("#duplicate") == "3"
            # a wrong key is shown, not swallowed
            page.fill("#api_key", "lk_wrong")
            page.set_input_files("#file", str(csv_file))
            page.click("#submit")
            page.wait_for_selector("#error", timeout=20_000)
            assert "Unauthorized" in page.inner_text("#error")
        finally:
            browser.close()


def _big_csv(rows: int) -> str:
    """`rows` results of the generic template, every tenth one rejected (no place)."""
    lines = [GENERIC.splitlines()[0]]
    for i in range(rows):
        postal = "00000" if i % 10 == 9 else "98104"
        lines.append(f"big-{i},2026-03-01T10:00:00Z,{postal},,,cocaine,Cocaine HCl,,")
    return "\n".join(lines) + "\n"


def test_a_large_upload_shows_progress_then_the_rejected_rows_to_download(
    served: str, make_site: MakeSite, tmp_path: Path
) -> None:
    key = make_site("big site", ["results"])["Authorization"].split()[1]
    csv_file = tmp_path / "big.csv"
    csv_file.write_text(_big_csv(2_500))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(f"{served}/upload", timeout=20_000)
            page.fill("#api_key", key)
            page.set_input_files("#file", str(csv_file))
            page.click("#submit")
            page.wait_for_selector("#progress", timeout=20_000)  # shown before the result
            page.wait_for_selector("#summary", timeout=60_000)
            assert page.inner_text("#progress-text") == "2500 of 2500 rows imported"
            assert page.inner_text("#accepted") == "2250"
            assert page.inner_text("#rejected") == "250"
            with page.expect_download() as download:
                page.click("#rejected-download")
            lines = Path(download.value.path()).read_text().splitlines()
            assert lines[0] == "line,reason,details" and len(lines) == 251
            assert lines[1].startswith("11,")  # line 11 of the file: the tenth result
        finally:
            browser.close()


def test_the_upload_stream_reports_each_committed_chunk(
    served: str, make_site: MakeSite, ingest_settings: Settings
) -> None:
    key = make_site("stream site", ["results"])["Authorization"].split()[1]
    with httpx.stream("POST", f"{served}/upload/stream", data={"api_key": key},
                      files={"file": ("big.csv", _big_csv(2_500), "text/csv")},
                      timeout=60) as response:
        messages = [json.loads(line) for line in response.iter_lines() if line]
    progress = [m for m in messages if "done" in m]
    assert progress == [{"done": 1000, "total": 2500}, {"done": 2000, "total": 2500},
                        {"done": 2500, "total": 2500}]
    assert messages[-1]["result"]["accepted"] == 2250
    # the answer came after the commits: every accepted row is in the database
    with session_scope(ingest_settings.sqlalchemy_url) as session:
        stored = session.scalar(select(func.count()).select_from(DrugCheck))
    assert stored == 2250
