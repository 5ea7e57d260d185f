"""The edge every service gets from shared/web.py's create_app (shared/edge.py): security
headers on HTML pages, /metrics and /docs only where allowed in prod, body limits before
the body is read (and before auth), deeply nested JSON refused with 400 (issue 14)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.alerts.api import app as alerts_app
from services.dashboard.api import app as dashboard_app
from services.ingest.api import app as ingest_app
from services.ingest.service.sites import create_site
from services.referrals.api import app as referrals_app
from shared.db import session_scope
from shared.settings import Settings, get_settings
from tests.browser import served_app
from tests.conftest import MigratedSqlite

APPS = {"ingest": ingest_app, "alerts": alerts_app, "referrals": referrals_app,
        "dashboard": dashboard_app}
PAGES = [("ingest", "/upload"), ("alerts", "/signup"), ("referrals", "/help"),
         ("ingest", "/docs"), ("alerts", "/redoc"), ("dashboard", "/docs")]


@pytest.fixture
def base_settings(tmp_path: Path, migrated_sqlite: MigratedSqlite) -> Settings:
    """SQLite is enough: nothing here touches what differs between databases."""
    url = migrated_sqlite(tmp_path / "edge.db")
    return Settings(env="test", database_url=url, var_dir=tmp_path / "var",
                    ingest_rate_per_second=0.0)


def prod(settings: Settings, **update: object) -> Settings:
    # model_copy skips the prod checks of secrets: not what is tested here
    return settings.model_copy(update={"env": "prod", **update})


@contextmanager
def client_of(app: FastAPI, settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        app.dependency_overrides.clear()


@pytest.mark.parametrize(("service", "path"), PAGES)
def test_every_html_page_carries_the_security_headers(
        base_settings: Settings, service: str, path: str) -> None:
    with client_of(APPS[service], base_settings) as client:
        response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "object-src 'none'" in csp
    if not path.startswith(("/docs", "/redoc")):
        assert "script-src 'self';" in csp  # no inline script on our own pages
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("service", list(APPS))
def test_metrics_and_docs_only_where_the_operator_allows_them_in_prod(
        base_settings: Settings, service: str) -> None:
    app = APPS[service]
    with client_of(app, base_settings) as client:  # dev/test: open
        assert client.get("/metrics").status_code == 200
        assert client.get("/docs").status_code == 200
    with client_of(app, prod(base_settings)) as client:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
        assert client.get("/healthz").status_code == 200
    with client_of(app, prod(base_settings, metrics_token="scrape-secret",
                             docs_enabled=True)) as client:
        assert client.get("/metrics").status_code == 404
        for wrong in (b"Bearer nope", b"Bearer scrape-secr\xe9t"):
            assert client.get("/metrics", headers={"Authorization": wrong}).status_code == 404
        scraped = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert scraped.status_code == 200 and "lookout_http_requests_total" in scraped.text
        assert client.get("/openapi.json").status_code == 200
    with client_of(app, prod(base_settings, metrics_enabled=True)) as client:
        assert client.get("/metrics").status_code == 200  # e.g. behind a network policy


@pytest.mark.parametrize(("service", "path"), [
    ("ingest", "/v1/drug-checks"), ("alerts", "/signup"), ("referrals", "/v1/referrals"),
    ("dashboard", "/anything")])
def test_every_service_refuses_a_body_over_its_limit_before_auth(
        base_settings: Settings, service: str, path: str) -> None:
    small = base_settings.model_copy(update={"max_body_bytes": 1000,
                                             "ingest_max_json_bytes": 1000})
    with client_of(APPS[service], small) as client:
        response = client.post(path, content=b"{" + b" " * 2000 + b"}",
                               headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"


def _post_head(port: int, path: str, headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Content-Type: application/json\r\n{headers}\r\n".encode())
    return sock


def _answer(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_50_mb_json_to_referrals_is_refused_before_it_is_read(
        base_settings: Settings) -> None:
    """Over a real socket: the 413 comes while almost all of the 50 MB is still unsent
    (before the fix the service read it all, then answered 401)."""
    referrals_app.dependency_overrides[get_settings] = lambda: base_settings
    try:
        with served_app(referrals_app) as base:
            port = int(base.rsplit(":", 1)[1])
            sock = _post_head(port, "/v1/referrals", "Content-Length: 50000000\r\n")
            sock.sendall(b"[" * 65536)  # 64 kB of the 50 MB
            started = time.monotonic()
            head = _answer(sock)
            sock.close()
            assert head.startswith(b"HTTP/1.1 413"), head[:200]
            assert time.monotonic() - started < 30
            # chunked, no Content-Length: read only up to the limit
            sock = _post_head(port, "/v1/referrals", "Transfer-Encoding: chunked\r\n")
            chunk = b"[" * 100_000
            for _ in range(11):  # 1.1 MB, over the 1 MB default
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            head = _answer(sock)
            sock.close()
            assert head.startswith(b"HTTP/1.1 413"), head[:200]
    finally:
        referrals_app.dependency_overrides.clear()


def test_deeply_nested_json_to_ingest_is_a_400_problem(base_settings: Settings) -> None:
    with session_scope(base_settings.sqlalchemy_url) as session:
        _, key = create_site(session, "Deep", ["results", "reports"])
    nested = "[" * 100_000 + "]" * 100_000
    with client_of(ingest_app, base_settings) as client:
        for path, body in (("/v1/drug-checks", nested),
                           ("/v1/drug-checks", '{"strips": ' + "[" * 990 + "]" * 990 + "}"),
                           ("/v1/overdose-reports", nested)):
            response = client.post(path, content=body, headers={
                "Authorization": f"Bearer {key}", "content-type": "application/json"})
            assert response.status_code == 400, response.text
            problem = response.json()
            assert response.headers["content-type"] == "application/problem+json"
            assert problem["title"] == "Malformed JSON" and "Traceback" not in response.text
            assert problem["errors"][0]["message"] == "nested too deeply"
