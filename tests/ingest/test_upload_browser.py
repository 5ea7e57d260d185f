"""The CSV upload page in a real browser (Debian's chromium driven by playwright) against the
ingest app served by a real uvicorn on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import sync_playwright

from services.ingest.api import app
from shared.settings import Settings, get_settings
from tests.conftest import free_port
from tests.ingest.conftest import MakeSite
from tests.ingest.test_csv import GENERIC

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]


@pytest.fixture
def served(ingest_settings: Settings) -> Iterator[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    app.dependency_overrides[get_settings] = lambda: ingest_settings
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
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
