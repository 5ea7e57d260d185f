"""Fixtures for the ingest tests: the app on real databases, sites with keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.ingest.api import app
from services.ingest.models import OutboxMessage
from services.ingest.service.sites import create_site
from shared.db import session_scope
from shared.settings import Settings, get_settings
from shared.topics import SITE_KEYS

MakeSite = Callable[..., dict[str, str]]

# Ingest's outbox rows but the sites' key announcements: every site made in a test announces
# its key on `sites.keys.v1`; the tests of results and reports count the rows they made.
DATA_ROWS = OutboxMessage.topic != SITE_KEYS.name


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    """The test settings with the rate limit off (tests of the limit set their own)."""
    return settings.model_copy(update={"ingest_rate_per_second": 0.0})


@pytest.fixture
def ingest_client(ingest_settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: ingest_settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


@pytest.fixture
def make_site(ingest_settings: Settings) -> MakeSite:
    """`make_site("name", ["results"])` -> the Authorization header of its new key."""

    def make(name: str, scopes: list[str] | None = None) -> dict[str, str]:
        with session_scope(ingest_settings.sqlalchemy_url) as session:
            _, key = create_site(session, name, scopes or ["results", "reports"])
        return {"Authorization": f"Bearer {key}"}

    return make


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert {"type", "title", "status"} <= body.keys()
    assert body["status"] == response.status_code
    return dict(body)
