"""Provider webhooks (issue 14, outbound requests): public https hosts only, checked after
DNS and connected to as checked, signed bodies that the documented example verifies,
generic errors, retries, and notices sent after the choice is answered."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi.testclient import TestClient

from services.referrals import api as referrals_api
from services.referrals import models as m
from services.referrals.api import app
from services.referrals.notify import (
    WEBHOOK_FAILED,
    ChannelNotifier,
    NoticeQueue,
    NotifierError,
    WebhookNotifier,
)
from shared.crypto import webhook_secret
from shared.db import session_scope
from shared.outbound import RefusedURLError, check_url, public_target
from shared.settings import REPO_ROOT, InsecureSettingsError, Settings, get_settings
from tests.referrals.helpers import TUESDAY_10AM, load_directory, statuses
from tests.referrals.webhook_server import WebhookServer

ADMIN = {"Authorization": "Bearer dev-admin-token"}
SECRET_KEY = "a-test-secret-key-of-more-than-32-bytes"
NOTICE = {"referral_id": "6f1c0c1e-2a43-4d0e-9a43-5b8f2c3d4e5f", "service_id": "svc-harbor-bup",
          "language": "es"}


def _local(**kwargs: Any) -> WebhookNotifier:
    """A notifier that may reach the loopback test server (as in dev and test)."""
    return WebhookNotifier(SECRET_KEY, require_https=False, allow_private=True, backoff=0,
                           **kwargs)


def _documented_verify() -> Any:
    """The provider's verification example, exactly as docs/referrals.md shows it."""
    text = (REPO_ROOT / "docs" / "referrals.md").read_text()
    [code] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S)
              if "def verify_lookout" in block]
    scope: dict[str, Any] = {}
    exec(compile(code, "docs/referrals.md", "exec"), scope)  # noqa: S102 - our own docs
    return scope["verify_lookout"]


def test_the_body_is_signed_with_the_providers_secret_and_the_docs_example_verifies_it(
        ) -> None:
    with WebhookServer() as hook:
        _local().send("webhook", hook.url, NOTICE)
    [got] = hook.received
    assert got["json"] == NOTICE and got["content_type"] == "application/json"
    headers = got["headers"]
    assert headers["Lookout-Delivery"] == f"{NOTICE['referral_id']}:svc-harbor-bup"
    verify = _documented_verify()
    secret = webhook_secret(SECRET_KEY, "svc-harbor-bup")
    assert verify(secret, headers, got["body"])
    assert not verify(webhook_secret(SECRET_KEY, "svc-other"), headers, got["body"])
    assert not verify(secret, headers, got["body"].replace(b"es", b"en"))
    old = {**headers, "Lookout-Timestamp": str(int(headers["Lookout-Timestamp"]) - 3600)}
    assert not verify(secret, old, got["body"])
    assert secret != webhook_secret("another-secret-key-of-32-bytes-or-more", "svc-harbor-bup")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/hook", "http://localhost:{port}/hook",
    "http://[::1]:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3:{port}/",
    "http://100.64.0.1/", "http://0.0.0.0:{port}/", "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_GET", "http://user:pw@example.org/", "http:///nohost",
])
def test_non_public_and_odd_urls_are_refused_before_any_request(url: str) -> None:
    with WebhookServer() as hook:
        notifier = WebhookNotifier(SECRET_KEY, require_https=False, backoff=0)
        with pytest.raises(NotifierError) as failed:
            notifier.send("webhook", url.format(port=hook.port), NOTICE)
    assert str(failed.value) == WEBHOOK_FAILED
    assert hook.received == []


def _resolver(answers: dict[str, list[str]], calls: list[str]) -> Any:
    """A DNS for the test's names (socket.getaddrinfo is process-wide: addresses pass)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if re.fullmatch(r"[0-9.]+|[0-9a-f:]+", host):
            return real(host, port, *args, **kwargs)
        calls.append(host)
        if host not in answers:
            raise socket.gaierror("not in the test's DNS")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in answers[host]]
    return getaddrinfo


def test_a_name_is_checked_after_resolution_and_a_mixed_answer_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({
        "intranet.provider.test": ["10.0.0.5"],
        "rebind.provider.test": ["93.184.216.34", "127.0.0.1"],
        "public.provider.test": ["93.184.216.34"]}, calls))
    for host in ("intranet.provider.test", "rebind.provider.test", "nowhere.test"):
        with pytest.raises(RefusedURLError):
            public_target(f"https://{host}/hook", require_https=True)
    target = public_target("https://public.provider.test/hook?x=1", require_https=True)
    assert (target.address, target.pinned_url, target.host_header) == (
        "93.184.216.34", "https://93.184.216.34:443/hook?x=1", "public.provider.test")
    with pytest.raises(RefusedURLError, match="https"):  # prod: https only, before any DNS
        check_url("http://public.provider.test/hook", require_https=True)
    assert calls.count("public.provider.test") == 1


def test_the_request_goes_to_the_address_that_was_checked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One lookup; the connection is to its answer and the name stays the Host: a second
    answer (DNS rebinding) is never asked for."""
    with WebhookServer() as hook:
        calls: list[str] = []
        monkeypatch.setattr(socket, "getaddrinfo",
                            _resolver({"hook.provider.test": ["127.0.0.1"]}, calls))
        _local().send("webhook", f"http://hook.provider.test:{hook.port}/hook", NOTICE)
        monkeypatch.undo()
    assert calls == ["hook.provider.test"]
    [got] = hook.received
    assert got["headers"]["Host"] == f"hook.provider.test:{hook.port}"


def _certificates(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA and a certificate for `name` signed by it: (server context, client
    context trusting only that CA)."""
    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    now = datetime.now(UTC)
    ca_key, leaf_key = key(), key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lookout test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, key_cert_sign=True, crl_sign=True,
              content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def test_https_goes_to_the_checked_address_with_the_certificate_of_the_urls_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The connection is to the IP that was checked, but TLS (SNI and the certificate
    check) is for the URL's name: a name whose certificate is not valid there fails."""
    server_tls, client_tls = _certificates(tmp_path, "hook.provider.test")
    with WebhookServer() as hook:
        hook.server.socket = server_tls.wrap_socket(hook.server.socket, server_side=True)
        calls: list[str] = []
        monkeypatch.setattr(socket, "getaddrinfo", _resolver({
            "hook.provider.test": ["127.0.0.1"], "other.provider.test": ["127.0.0.1"]}, calls))
        notifier = WebhookNotifier(SECRET_KEY, require_https=True, allow_private=True,
                                   backoff=0, attempts=1, verify=client_tls)
        notifier.send("webhook", f"https://hook.provider.test:{hook.port}/hook", NOTICE)
        with pytest.raises(NotifierError):  # the certificate does not name this host
            notifier.send("webhook", f"https://other.provider.test:{hook.port}/hook", NOTICE)
        monkeypatch.undo()
    [got] = hook.received
    assert got["json"] == NOTICE
    assert got["headers"]["Host"] == f"hook.provider.test:{hook.port}"
    assert calls == ["hook.provider.test", "other.provider.test"]


def test_every_failure_reads_the_same_and_only_transient_ones_are_retried() -> None:
    errors = []
    for status in (404, 500):
        with WebhookServer(status=status) as hook, pytest.raises(NotifierError) as failed:
            _local().send("webhook", hook.url, NOTICE)
        errors.append(str(failed.value))
        assert len(hook.received) == (1 if status == 404 else 3)  # 5xx: three attempts
    with pytest.raises(NotifierError) as closed:  # a closed port
        _local(timeout=1).send("webhook", "http://127.0.0.1:9/hook", NOTICE)
    hold = threading.Event()
    with WebhookServer(hold=hold) as hook, pytest.raises(NotifierError) as slow:
        _local(timeout=0.3, attempts=1).send("webhook", hook.url, NOTICE)
    assert [*errors, str(closed.value), str(slow.value)] == [WEBHOOK_FAILED] * 4
    with WebhookServer(statuses=[503, 429, 204]) as hook:
        _local().send("webhook", hook.url, NOTICE)
    deliveries = {r["headers"]["Lookout-Delivery"] for r in hook.received}
    assert len(hook.received) == 3 and len(deliveries) == 1  # retried, the same delivery id


def test_prod_refuses_lifting_the_address_check() -> None:
    """The validator alone (other prod checks may refuse these settings first)."""
    loose = Settings.model_construct(env="prod", referrals_webhook_allow_private=True)
    with pytest.raises(InsecureSettingsError, match="WEBHOOK_ALLOW_PRIVATE"):
        loose._refuse_private_webhooks_in_prod()  # type: ignore[operator]
    Settings.model_construct(env="test", referrals_webhook_allow_private=True
                             )._refuse_private_webhooks_in_prod()  # type: ignore[operator]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    load_directory(settings.sqlalchemy_url, webhook=None)
    local = settings.model_copy(update={"referrals_max_distance_km": 20.0,
                                        "referrals_webhook_allow_private": True})
    app.dependency_overrides[get_settings] = lambda: local
    app.state.notifier, app.state.notices = ChannelNotifier(local), NoticeQueue()
    with mock.patch.object(referrals_api, "utcnow", lambda: TUESDAY_10AM), \
            TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    app.state.notifier = app.state.notices = None


def _patch(client: TestClient, address: str) -> Any:
    return client.patch("/v1/providers/services/svc-harbor-bup", headers=ADMIN,
                        json={"notify_channel": "webhook", "notify_address": address})


def _refer_and_choose(client: TestClient) -> tuple[str, Any]:
    created = client.post("/v1/referrals", headers=ADMIN, json={
        "service_types": ["buprenorphine"], "postal_code": "98104",
        "consent": {"shared_fields": ["service_type"], "wording": "read to the person"}})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    return rid, client.post(f"/v1/referrals/{rid}/choice", json={"option": 1}, headers=ADMIN)


def test_a_slow_provider_does_not_hold_the_choice(client: TestClient,
                                                  settings: Settings) -> None:
    """The hook answers only once the test has the choice's answer: today the request
    waited for it (and timed out), now the notice is sent after the answer."""
    hold = threading.Event()
    with WebhookServer(hold=hold) as hook:
        assert _patch(client, hook.url).status_code == 200
        _rid, chosen = _refer_and_choose(client)
        assert chosen.status_code == 200 and chosen.json()["status"] == "chosen"
        hold.set()
        app.state.notices.join()
    assert len(hook.received) == 1
    with session_scope(settings.sqlalchemy_url) as session:
        notice = session.query(m.ProviderNotice).one()
        assert (notice.status, notice.error) == ("sent", None)
    assert statuses(settings.sqlalchemy_url)[-1] == "provider_notified"


def test_the_admin_api_takes_only_public_urls_and_shows_the_secret(
        client: TestClient, settings: Settings) -> None:
    strict = settings.model_copy(update={"referrals_webhook_allow_private": False})
    app.dependency_overrides[get_settings] = lambda: strict
    for bad in ("file:///etc/passwd", "gopher://provider.example/", "http://127.0.0.1:8002/x",
                "http://[fe80::1]/", "http://169.254.169.254/", "ftp://provider.example/"):
        refused = _patch(client, bad)
        assert refused.status_code == 422, bad
        assert refused.json()["errors"][0]["field"] == "/notify_address"
    ok = _patch(client, "https://intake.provider.example/lookout")
    assert ok.status_code == 200
    assert ok.json()["webhook_secret"] == webhook_secret(settings.secret_key, "svc-harbor-bup")


def test_a_refused_or_failed_webhook_is_recorded_generically(
        client: TestClient, settings: Settings, tmp_path: Path) -> None:
    """Staff read the notice's error on the referral: it must not tell which port is open."""
    strict = settings.model_copy(update={"referrals_webhook_allow_private": False})
    app.state.notifier = ChannelNotifier(strict)
    with WebhookServer() as hook:
        assert _patch(client, f"http://localhost:{hook.port}/hook").status_code == 200
        rid, _chosen = _refer_and_choose(client)
        app.state.notices.join()
    assert hook.received == []  # localhost resolves to loopback: refused
    full = client.get(f"/v1/referrals/{rid}", headers=ADMIN).json()
    assert [(n["status"], n["error"]) for n in full["notices"]] == [("failed", WEBHOOK_FAILED)]
    assert full["status"] == "chosen"  # staff follow up
