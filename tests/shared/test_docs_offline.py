"""Every service's /docs renders its operations in chromium with no request leaving the
service's own origin (Swagger UI comes from the fastapi-offline package, not a CDN)."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium, served_app

SERVICES = ["ingest", "alerts", "referrals", "dashboard"]


def _requests_of_docs_page(browser: Browser, base: str) -> tuple[int, list[str]]:
    """Operations shown on `base`/docs, and every URL the page requested."""
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{base}/docs", timeout=20_000)
    page.wait_for_selector(".opblock", timeout=20_000)
    operations = page.locator(".opblock").count()
    page.close()
    return operations, requested


def test_docs_of_every_service_render_offline() -> None:
    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for service in SERVICES:
                app = importlib.import_module(f"services.{service}.api").app
                with served_app(app, ready_path="/openapi.json") as base:
                    operations, requested = _requests_of_docs_page(browser, base)
                assert operations >= 1, service
                outside = [u for u in requested if not u.startswith(base + "/")]
                assert outside == [], (service, outside)
                assert any(u.endswith("/swagger-ui-bundle.js") for u in requested), service
        finally:
            browser.close()


@pytest.mark.parametrize("service", SERVICES)
def test_docs_page_names_no_cdn(service: str) -> None:
    app = importlib.import_module(f"services.{service}.api").app
    html = TestClient(app).get("/docs").text
    assert "cdn.jsdelivr.net" not in html and "swagger-ui-bundle.js" in html
