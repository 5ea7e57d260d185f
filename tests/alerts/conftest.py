"""The alerts tests' fixtures: from `testing/alerts_stack.py`, a fake Twilio server (for its
SID and TOKEN) and a broker; `settings` sending SMS to that fake server with the real twilio
SDK; `settings` with a public URL, and an API client on them, for the webhooks. A module
with a fixture of the same name uses its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.alerts.api import app
from shared.settings import Settings, get_settings
from testing.alerts_stack import SID, TOKEN, bootstrap, fake_twilio  # noqa: F401  (fixtures)
from testing.twilio_server import FakeTwilioServer

PUBLIC = "https://alerts.example.org"


@pytest.fixture
def twilio_settings(settings: Settings, fake_twilio: FakeTwilioServer) -> Settings:  # noqa: F811
    return settings.model_copy(update={
        "sms_backend": "twilio", "twilio_account_sid": SID, "twilio_auth_token": TOKEN,
        "twilio_api_base_url": fake_twilio.url, "sms_rate_per_second": 0})


@pytest.fixture
def public_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"public_alerts_url": PUBLIC,
                                       "twilio_auth_token": "webhook-token"})


@pytest.fixture
def client(public_settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: public_settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
