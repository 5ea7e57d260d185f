"""The CSV upload page in a real browser (Debian's chromium driven by playwright) against the
ingest app served by a real uvicorn on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from services.ingest.api import app
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
