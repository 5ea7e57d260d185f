"""The dashboard app against a real database, with the alerts app in process behind the
dashboard's alerts client (the same database: each service reads only its own tables)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from services.alerts.api import app as alerts_app
from services.dashboard import accounts, alerts_client
from services.dashboard.api import app
from services.dashboard.security import _login_limiters
from shared.db import session_scope
from shared.settings import Settings, get_settings
from testing.alerts_stack import bootstrap, fake_twilio  # noqa: F401  (fixtures: browser test)

PASSWORD = "correct horse battery"


@pytest.fixture
def dash_settings(settings: Settings) -> Settings:
    return settings


@pytest.fixture
def client(dash_settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: dash_settings
    alerts_app.dependency_overrides[get_settings] = lambda: dash_settings
    alerts_client.transport = httpx.ASGITransport(app=alerts_app)
    _login_limiters.clear()
    with TestClient(app) as c:
        yield c
    alerts_client.transport = None
    app.dependency_overrides.clear()
    alerts_app.dependency_overrides.clear()


MakeOfficial = Callable[..., str]


@pytest.fixture
def make_official(dash_settings: Settings) -> MakeOfficial:
    """An account with a known password; returns its name."""

    def make(name: str, role: str = "reviewer", regions: str = "us/wa") -> str:
        with session_scope(dash_settings.sqlalchemy_url) as session:
            new = accounts.create(session, dash_settings, name, role, regions)
            accounts.set_password(dash_settings, new.account, PASSWORD)
        return name

    return make


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD,
          next_: str = "/") -> httpx.Response:
    page = client.get("/login")
    return client.post("/login", data={"name": name, "password": password,
                                       "csrf_token": form_csrf(page.text), "next": next_},
                       follow_redirects=False)


def csrf_of(client: TestClient) -> str:
    """The CSRF token of the signed-in session (from a page with a form)."""
    return form_csrf(client.get("/account/totp").text)
