"""The problem+json handlers every service installs."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from shared.problems import PROBLEM_JSON, install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/gone")
    def gone() -> None:
        raise ClientDisconnect()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    return app


def test_client_disconnect_is_not_logged_as_a_server_error(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shared.problems"):
        response = TestClient(_app(), raise_server_exceptions=False).get("/gone")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


def test_unexpected_error_is_a_500_problem_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shared.problems"):
        response = TestClient(_app(), raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.json()["title"] == "Internal error"
    assert any(r.levelno == logging.ERROR for r in caplog.records)
