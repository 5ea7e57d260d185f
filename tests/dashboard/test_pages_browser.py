"""The dashboard's pages in a real browser (Debian's chromium driven by Playwright) against
the dashboard app served by uvicorn on loopback, with real data in its read model (the
BC export's last weeks and synthetic overdose reports, through the consumer): every page
renders for a signed-in official, on a desktop and a phone, with its screenshot saved
under test-artifacts/screenshots/; the browser asks nothing of any other origin; the SMS
box counts segments as one types; a new signal shows on an open page within 2 s, without a
reload."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from services.dashboard import accounts, consumer
from services.dashboard.api import app
from shared.db import session_scope
from shared.events import SpikeSignalV1
from shared.regions import by_postal_code
from shared.settings import REPO_ROOT, Settings, get_settings
from shared.topics import SIGNALS
from testing import dashboard_seed
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium, served_app
from tests.conftest import MigratedSqlite

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # a phone's CSS pixels (iPhone 12-15)


class Served:
    def __init__(self, base: str, url: str, settings: Settings, seeded: dashboard_seed.Seeded,
                 password: str) -> None:
        self.base, self.url, self.settings = base, url, settings
        self.seeded, self.password = seeded, password


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           migrated_sqlite: MigratedSqlite) -> Iterator[Served]:
    require_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    url = migrated_sqlite(tmp / "lookout.db")
    settings = Settings(env="test", database_url=url, var_dir=tmp / "var")
    seeded = dashboard_seed.seed(url, datetime.now(UTC), bc_days=7, reports=300, report_days=28)
    with session_scope(url) as session:
        password = accounts.create(session, settings, "pat", "reviewer", "us/fl",
                                   with_password=True).password
    assert password
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with served_app(app) as base:
            yield Served(base, url, settings, seeded, password)
    finally:
        app.dependency_overrides.clear()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def signed_in_page(browser: Browser, served: Served, viewport: dict[str, int],
                   requests: list[str]) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{served.base}/login", timeout=20_000)
    page.fill("#name", "pat")
    page.fill("#password", served.password)
    page.click("#sign-in")
    page.wait_for_url(f"{served.base}/", timeout=20_000)
    return page


def pages(s: dashboard_seed.Seeded) -> list[tuple[str, str, str]]:
    """(name, path, a selector that only real data fills)."""
    return [
        ("now", "/", f"#now-waiting a[href='/alerts/{s.draft_id}']"),
        ("review", "/review", f"#queue tr[data-alert='{s.draft_id}']"),
        ("workbench", f"/alerts/{s.draft_id}", "main:has(#concordance) #samples tbody tr"),
        ("workbench-sent", f"/alerts/{s.sent_id}", "#flyer"),
        ("trends", "/trends?region=us/fl&days=28", "#trend-chart canvas"),
        ("supply", "/supply?days=28", "#line-list tbody tr"),
        ("map", "/map", "figure.map[data-drawn='true']"),
        ("referrals", "/referrals", "#funnel-chart canvas"),
        ("performance", "/performance", "#reject-rates tbody tr"),
    ]


def test_every_page_renders_on_desktop_and_phone_from_this_origin_only(
        served: Served, browser: Browser) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        requests: list[str] = []
        page = signed_in_page(browser, served, viewport, requests)
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name, path, selector in pages(served.seeded):
            response = page.goto(f"{served.base}{path}", timeout=20_000)
            assert response is not None and response.status == 200, (name, response)
            page.wait_for_selector(selector, state="attached", timeout=20_000)
            assert page.locator("nav a[aria-current='page']").count() == 1, name
            if label == "phone":  # nothing wider than the phone: no sideways scrolling
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"] + 1, (name, width)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        assert not errors, errors
        # the map drew every county of the vendored atlas and coloured the seeded ones
        page.goto(f"{served.base}/map", timeout=20_000)
        page.wait_for_selector("figure.map[data-drawn='true']", timeout=20_000)
        assert page.locator("path.county").count() > 3000
        assert page.locator("path.county[data-signal='true']").count() >= 1
        assert page.locator("path.county[data-level='1'], path.county[data-level='2'], "
                            "path.county[data-level='3']").count() >= 60
        foreign = [u for u in requests if not u.startswith(served.base + "/")]
        assert requests and not foreign, foreign
        page.context.close()


def test_the_sms_box_counts_segments_live(served: Served, browser: Browser) -> None:
    requests: list[str] = []
    page = signed_in_page(browser, served, DESKTOP, requests)
    page.goto(f"{served.base}/alerts/{served.seeded.draft_id}", timeout=20_000)
    box = page.locator("textarea[name='text_en']")
    counter = page.locator("#text-en-count")
    assert counter.get_attribute("data-segments") == "1"
    assert "STOP line present" in counter.inner_text()
    box.fill("x" * 161)
    assert counter.get_attribute("data-segments") == "2"
    assert "STOP line MISSING" in counter.inner_text()
    box.fill("é" * 150 + "Ω€")  # still GSM-7, the euro sign counts twice: 153 units
    assert counter.get_attribute("data-segments") == "1"
    box.fill("🚨" + "x" * 69)  # not GSM-7: UCS-2, 71 code units
    assert counter.get_attribute("data-segments") == "2"
    page.context.close()


def test_a_new_signal_appears_on_an_open_page_within_2_s(served: Served,
                                                         browser: Browser) -> None:
    requests: list[str] = []
    page = signed_in_page(browser, served, DESKTOP, requests)
    page.wait_for_selector("#live-status[data-state='live']", timeout=20_000)
    region = by_postal_code("32301")  # Leon County: no signal seeded there
    assert page.locator(f"#now-regions tr[data-region='{region.id}']").count() == 0
    page.evaluate("window.notReloaded = true")
    now = datetime.now(UTC)
    signal = SpikeSignalV1(producer="test", region_id=region.id, region_name=region.name,
                           severity="critical", occurred_at=now, window_start=now
                           - timedelta(hours=24), window_end=now, observed=9, expected=2,
                           upperbound=5, method="ears_c2", score=2.5)
    consumer.apply_batch(served.url, [(consumer.Record(SIGNALS.name, b"", now), signal)])
    start = time.monotonic()
    page.wait_for_selector(f"#now-regions tr[data-region='{region.id}']", timeout=2_000)
    assert time.monotonic() - start < 2.0
    assert page.evaluate("window.notReloaded") is True
    page.context.close()


def test_a_saved_view_on_trends_opens_with_its_filters(served: Served,
                                                       browser: Browser) -> None:
    requests: list[str] = []
    page = signed_in_page(browser, served, DESKTOP, requests)
    page.goto(f"{served.base}/trends", timeout=20_000)
    page.select_option("#region", "us/fl")
    page.select_option("#bucket", "week")
    page.select_option("#fatal", "yes")
    page.check("input[name='days'][value='90']")
    page.click("form.filters button[type='submit']")
    page.wait_for_url("**/trends?*fatal=yes*", timeout=20_000)
    page.click("#saved-views summary")  # the panel opens (closed while there is no view)
    page.fill("#view-name", "Florida fatal, weekly")
    page.click("#save-view button[type='submit']")
    page.wait_for_url("**/trends?*", timeout=20_000)

    page.goto(f"{served.base}/", timeout=20_000)  # away, then back through the list
    page.click("nav a[href='/views']")
    page.wait_for_url(f"{served.base}/views", timeout=20_000)
    page.click("#views a:text('Florida fatal, weekly')")
    page.wait_for_url("**/trends?*", timeout=20_000)
    assert page.input_value("#region") == "us/fl"
    assert page.input_value("#bucket") == "week"
    assert page.input_value("#fatal") == "yes"
    assert page.is_checked("input[name='days'][value='90']")
    assert page.locator("#saved-views a:text('Florida fatal, weekly')").count() == 1

    # and it can be deleted from the list
    page.goto(f"{served.base}/views", timeout=20_000)
    page.click("#views button[aria-label='Delete Florida fatal, weekly']")
    page.wait_for_url(f"{served.base}/views", timeout=20_000)
    assert page.locator("#views a:text('Florida fatal, weekly')").count() == 0
    foreign = [u for u in requests if not u.startswith(served.base + "/")]
    assert not foreign, foreign
    page.context.close()
