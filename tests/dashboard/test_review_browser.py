"""Accountable review in a real browser (Debian's chromium driven by Playwright) against the
real processes: the dashboard, the alerts API and the alerts worker (`lookout serve` /
`lookout worker`), a Tansu broker, SQLite and the fake Twilio server.

A signal on signals.v1 makes a draft; a locked-out account, a viewer, a reviewer of another
region and a forged form are refused and change nothing; a reviewer of the region approves
and the SMS reaches the fake Twilio server; the audit names the official; credentials sent
straight to the alerts API that are forged or expired are refused; an idle session ends."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import text

from shared.db import get_engine
from shared.settings import Settings
from testing.alerts_stack import REGION, SECRET, Stack, seed_subscribers, wait_until
from testing.builders import contamination_signal
from testing.twilio_server import FakeTwilioServer
from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.conftest import MigratedSqlite, free_port, run_lookout
from tests.credentials import official_headers

pytestmark = pytest.mark.e2e
def _publish(bootstrap: str) -> None:
    signal = contamination_signal(REGION, severity="warning")  # not approved by policy

    async def go() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("signals.v1", signal.model_dump_json().encode(),
                                         key=REGION.encode())
        finally:
            await producer.stop()

    asyncio.run(go())


def _sign_in(page: Page, base: str, name: str, password: str, target: str) -> None:
    page.goto(f"{base}{target}", timeout=30_000)
    assert page.url.startswith(f"{base}/login?next="), page.url
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#sign-in")
    page.wait_for_load_state()


def _sign_out(page: Page) -> None:
    page.click("#logout")
    page.wait_for_url("**/login", timeout=30_000)


def test_review_in_the_browser_end_to_end(
    tmp_path: Path, bootstrap: str, fake_twilio: FakeTwilioServer,
    migrated_sqlite: MigratedSqlite,
) -> None:
    require_chromium()
    dashboard_port = free_port()
    stack = Stack(tmp_path, bootstrap, fake_twilio.url, rate=0,
                  extra_env={"LOOKOUT_DASHBOARD_PORT": str(dashboard_port)})
    stack.migrate(migrated_sqlite)
    seed_subscribers(stack.db_url, SECRET, 3)
    env = {**stack.env}
    passwords = {}
    for name, role, regions in (("vic", "viewer", "us/wa"), ("ore", "reviewer", "us/or"),
                                ("rita", "reviewer", "us/wa"), ("lou", "reviewer", "us/wa")):
        out = run_lookout(env, "officials", "create", name, "--role", role, "--regions",
                          regions, "--password")
        passwords[name] = out.strip().splitlines()[-1]
    stack.start("alerts")
    stack.start("dashboard")
    stack.wait_api()
    stack.start("alerts-worker", LOOKOUT_PUBLIC_ALERTS_URL="")
    api = f"http://127.0.0.1:{stack.alerts_port}"
    base = f"http://127.0.0.1:{dashboard_port}"
    operator = {"Authorization": f"Bearer {Settings().admin_token}"}
    try:
        assert wait_until(lambda: _up(f"{base}/healthz"), 60), "the dashboard did not start"
        _publish(bootstrap)
        drafts: list[dict[str, Any]] = []

        def draft_arrived() -> bool:
            drafts[:] = httpx.get(f"{api}/v1/alerts?status=draft", headers=operator).json()
            return bool(drafts)

        assert wait_until(draft_arrived, 90), "no draft alert from the signal"
        alert_id = drafts[0]["id"]
        review = f"/alerts/{alert_id}/review"

        def alert_now() -> dict[str, Any]:
            return httpx.get(f"{api}/v1/alerts/{alert_id}", headers=operator).json()

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                # Lockout after repeated failures: even the right password is refused then.
                page.goto(f"{base}/login", timeout=30_000)
                for _ in range(Settings().dashboard_login_max_failures):
                    page.fill("#name", "lou")
                    page.fill("#password", "not the password")
                    page.click("#sign-in")
                    page.wait_for_selector("#login-error")
                assert "locked" in page.inner_text("#login-error")
                page.fill("#name", "lou")
                page.fill("#password", passwords["lou"])
                page.click("#sign-in")
                assert "locked" in page.inner_text("#login-error")

                # A viewer sees the alert; their approve gets 403 and changes nothing.
                _sign_in(page, base, "vic", passwords["vic"], review)
                assert page.url == f"{base}{review}"
                assert page.inner_text("#whoami").startswith("vic (viewer")
                page.click("#approve")
                page.wait_for_selector("#error-title")
                assert page.inner_text("#error-title") == "Forbidden"
                assert alert_now()["status"] == "draft"
                page.goto(f"{base}{review}")
                _sign_out(page)

                # A reviewer of another region: 403 from the alerts service, nothing changes.
                _sign_in(page, base, "ore", passwords["ore"], review)
                page.click("#approve")
                page.wait_for_selector("#error-detail")
                assert "outside the regions" in page.inner_text("#error-detail")
                assert alert_now()["status"] == "draft"
                page.goto(f"{base}{review}")
                _sign_out(page)

                # The region's reviewer: a stale CSRF token is refused, then the approval.
                _sign_in(page, base, "rita", passwords["rita"], review)
                page.eval_on_selector_all("input[name=csrf_token]",
                                          "els => els.forEach(e => e.value = 'stale')")
                page.click("#approve")
                page.wait_for_selector("#error-detail")
                assert "CSRF" in page.inner_text("#error-detail")
                assert alert_now()["status"] == "draft"
                page.goto(f"{base}{review}")
                page.click("#approve")
                page.wait_for_selector("#approved-by")
                assert page.inner_text("#approved-by") == "rita"
                assert wait_until(lambda: len(fake_twilio.messages()) == 3, 60), \
                    f"{len(fake_twilio.messages())} of 3 SMS reached the fake Twilio server"
                assert "Fentanyl" in fake_twilio.messages()[0]["body"]
                detail = alert_now()
                assert [(a["actor"], a["action"]) for a in detail["audit"]][:2] == [
                    ("system", "create"), ("rita", "approve")]
                page.reload()
                assert "rita" in page.inner_text("#alert-audit")

                # An idle session ends: the next page asks to sign in again.
                engine = get_engine(stack.db_url)
                with engine.begin() as conn:
                    conn.execute(text("UPDATE dashboard_sessions SET last_seen_at = :t"),
                                 {"t": "2000-01-01 00:00:00.000000"})
                engine.dispose()
                page.goto(f"{base}{review}")
                assert page.url.startswith(f"{base}/login?next=")
            finally:
                browser.close()

        # Straight to the alerts API: forged (another key) and expired credentials.
        now = int(time.time())
        forged = jwt.encode({"iss": "lookout-dashboard", "aud": "lookout-alerts",
                             "sub": str(uuid.uuid4()), "name": "mallory", "role": "admin",
                             "regions": ["*"], "iat": now, "exp": now + 60,
                             "jti": uuid.uuid4().hex}, Ed25519PrivateKey.generate(),
                            algorithm="EdDSA")
        test_settings = Settings(env="test")
        for headers in ({"Authorization": f"Bearer {forged}"},
                        official_headers(test_settings, "rita", regions=("us/wa",),
                                         now=time.time() - 3600),
                        {**operator, "X-Actor": "rita"}):
            refused = httpx.post(f"{api}/v1/alerts/{alert_id}/cancel", headers=headers,
                                 json={"reason": "forged"})
            assert refused.status_code == 401, refused.text
        assert alert_now()["status"] in ("sending", "sent")
        # The dashboard's audit: every sign-in, failure and action, by the official.
        log = _dashboard_audit(stack.db_url)
        assert ("lou", "login", "failed") in log and ("lou", "login", "refused") in log
        assert ("vic", "alert_approve", "refused") in log
        assert ("ore", "alert_approve", "refused") in log
        assert ("rita", "alert_approve", "ok") in log
    finally:
        stack.stop_all()
    for name in ("dashboard", "alerts"):  # no request of the test failed inside a service
        assert "Traceback" not in (tmp_path / f"{name}.log").read_text(errors="replace"), name


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _dashboard_audit(url: str) -> list[tuple[str, str, str]]:
    engine = get_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action, outcome FROM dashboard_audit "
                                 "ORDER BY id")).all()
    return [(a, b, c) for a, b, c in rows]


