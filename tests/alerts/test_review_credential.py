"""Review actions on the alerts API take who acts from the dashboard's signed credential:
forged, expired, over-long or other-key credentials, viewers and reviewers of other regions
are refused and nothing changes; an edit after approval goes back to review; the second
reviewer policy; the operators' token and the named admin's decryption."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.alerts import credentials
from services.alerts.api import app
from services.alerts.models import Alert, AlertAudit, Delivery, UsedCredential
from services.alerts.service.fanout import fan_out, fan_out_page
from services.alerts.service.review import approve, edit
from services.alerts.service.signals import alert_from_signal
from shared.db import session_scope
from shared.officials import AUDIENCE, ISSUER, public_key, verify
from shared.settings import AlertRegionPolicy, Settings, get_settings
from testing.builders import contamination_signal
from tests.alerts.test_service import add_subscriber
from tests.credentials import official_headers

REGION = "us/wa/king-county/98104"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def _draft(settings: Settings, severity: Any = "warning", region: str = REGION) -> uuid.UUID:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings,
                                          contamination_signal(region, severity=severity))
        assert alert.status == "draft"
        return alert.id


def _state(settings: Settings, alert_id: uuid.UUID) -> tuple[str, str | None, int]:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        audits = session.scalar(select(func.count()).select_from(AlertAudit)
                                .where(AlertAudit.alert_id == alert_id))
        return alert.status, alert.approved_by, int(audits or 0)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "1", "name": "mallory", "role": "admin",
            "regions": ["*"], "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex,
            **overrides}


def test_forged_expired_and_other_key_credentials_are_refused_and_change_nothing(
    client: TestClient, settings: Settings
) -> None:
    alert_id = _draft(settings)
    before = _state(settings, alert_id)
    other_key = Ed25519PrivateKey.generate()
    now = time.time()
    refused = {
        "another key": {"Authorization": "Bearer " + jwt.encode(_claims(), other_key,
                                                                algorithm="EdDSA")},
        "expired": official_headers(settings, role="admin", now=now - 600),
        "too long-lived": official_headers(settings, role="admin", ttl=3600),
        "unsigned": {"Authorization": "Bearer " + _unsigned(_claims())},
        "wrong audience": {"Authorization": "Bearer " + jwt.encode(
            _claims(aud="lookout-referrals"), _signing(settings), algorithm="EdDSA")},
        "tampered role": {"Authorization": "Bearer " + _tamper(
            official_headers(settings, role="viewer")["Authorization"][7:],
            role="admin")},
        "the admin token": {"Authorization": f"Bearer {settings.admin_token}",
                            "X-Actor": "dr.ops"},
        "a typed actor only": {"X-Actor": "dr.ops"},
    }
    for why, headers in refused.items():
        response = client.post(f"/v1/alerts/{alert_id}/approve", headers=headers)
        assert response.status_code == 401, (why, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for why, headers in refused.items():
        response = client.patch(f"/v1/alerts/{alert_id}", headers=headers,
                                json={"texts": {"en": "forged text STOP"}})
        assert response.status_code == 401, why
    assert _state(settings, alert_id) == before


def _unsigned(claims: dict[str, Any]) -> str:
    """alg "none": a token with no signature at all."""
    def part(data: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(data).encode()).decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _signing(settings: Settings) -> Ed25519PrivateKey:
    from shared.officials import signing_key

    return signing_key(settings)


def _tamper(token: str, **claims: Any) -> str:
    """The same signature over changed claims."""
    header, payload, signature = token.split(".")
    data = json.loads(jwt.utils.base64url_decode(payload))
    data.update(claims)
    changed = jwt.utils.base64url_encode(json.dumps(data).encode()).decode()
    return f"{header}.{changed}.{signature}"


def test_a_viewer_and_a_reviewer_of_another_region_get_403(
    client: TestClient, settings: Settings
) -> None:
    alert_id = _draft(settings)
    before = _state(settings, alert_id)
    viewer = ("vic.viewer", "viewer", ("us/wa",))
    elsewhere = ("ore.reviewer", "reviewer", ("us/or", "us/wa/pierce"))
    for name, role, regions in (viewer, elsewhere):
        for method, path, body in (("post", "approve", None), ("post", "reject", None),
                                   ("post", "cancel", None), ("patch", "", {"texts": {}})):
            url = f"/v1/alerts/{alert_id}/{path}".rstrip("/")
            # a fresh credential for each request, as the dashboard signs them
            headers = official_headers(settings, name, role=role, regions=regions)
            response = client.request(method.upper(), url, headers=headers, json=body)
            assert response.status_code == 403, (path, response.text)
    assert _state(settings, alert_id) == before
    ok = client.post(f"/v1/alerts/{alert_id}/approve",
                     headers=official_headers(settings, "wa.reviewer", regions=("us/wa",)))
    assert ok.status_code == 200 and ok.json()["approved_by"] == "wa.reviewer"


def test_an_edit_after_approval_goes_back_to_review_and_is_not_sent(
    client: TestClient, settings: Settings
) -> None:
    add_subscriber(settings, "+12065550170", REGION)
    alert_id = _draft(settings)
    first = official_headers(settings, "ann.first")
    assert client.post(f"/v1/alerts/{alert_id}/approve", headers=first).status_code == 200
    text = "Lookout ALERT: changed after approval. Reply STOP to cancel."
    edited = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": text}},
                          headers=official_headers(settings, "bob.second"))
    assert edited.status_code == 200
    assert edited.json()["status"] == "draft" and edited.json()["approved_by"] is None
    with session_scope(settings.sqlalchemy_url) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        assert fan_out(session, alert) == 0  # what the worker would do: nothing
        last = session.scalars(select(AlertAudit).where(AlertAudit.alert_id == alert_id)
                               .order_by(AlertAudit.id.desc())).first()
        assert last is not None and (last.actor, last.action) == ("bob.second", "edit")
        assert last.before is not None and last.before["approved_by"] == "ann.first"
        assert last.before["status"] == "approved"
    approved = client.post(f"/v1/alerts/{alert_id}/approve",
                           headers=official_headers(settings, "ann.first")).json()
    assert approved["approved_by"] == "ann.first" and approved["texts"]["en"] == text
    with session_scope(settings.sqlalchemy_url) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        assert fan_out(session, alert) == 1
        assert session.scalar(select(Delivery.body)) == text
    # Once it is going out, it can no longer be edited (cancel, or follow up, instead).
    late = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": "late STOP"}},
                        headers=official_headers(settings, "ann.first"))
    assert late.status_code == 409


def test_the_fan_out_does_not_send_an_alert_sent_back_to_review(settings: Settings) -> None:
    """The fan-out's move approved -> sending is guarded: an alert read as approved, then
    sent back to review by an edit, is not fanned out."""
    add_subscriber(settings, "+12065550171", REGION)
    alert_id = _draft(settings)
    with session_scope(settings.sqlalchemy_url) as session:
        approve(session, alert_id, "ann")
    with session_scope(settings.sqlalchemy_url) as worker:
        stale = worker.get(Alert, alert_id)
        assert stale is not None and stale.status == "approved"
        worker.commit()  # the worker's snapshot of the alert stays in memory
        with session_scope(settings.sqlalchemy_url) as official:
            edit(official, alert_id, "bob", {"en": "New text. Reply STOP to cancel."})
        assert fan_out_page(worker, stale, None) == (0, None)
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
        alert = session.get(Alert, alert_id)
        assert alert is not None and alert.status == "draft"


@pytest.fixture
def two_reviewers(settings: Settings) -> Settings:
    return settings.model_copy(update={"alert_policy_json": {
        "us/wa": AlertRegionPolicy(second_reviewer=True)}})


def test_critical_alerts_need_a_second_reviewer_not_the_last_editor(
    client: TestClient, two_reviewers: Settings
) -> None:
    app.dependency_overrides[get_settings] = lambda: two_reviewers
    alert_id = _draft(two_reviewers, severity="critical")

    def signed(name: str) -> dict[str, str]:  # one credential a request, as the dashboard
        return official_headers(two_reviewers, name)

    url = f"/v1/alerts/{alert_id}"
    first = client.post(f"{url}/approve", headers=signed("ann")).json()
    assert first["status"] == "draft" and first["second_reviewer"] is True
    assert first["first_approvals"] == ["ann"]
    again = client.post(f"{url}/approve", headers=signed("ann"))
    assert again.status_code == 409 and again.json()["approvals"] == ["ann"]
    # An edit resets the approvals; its author cannot give the second one.
    edited = client.patch(url, headers=signed("bob"),
                          json={"texts": {"en": "Fentanyl in coke. Reply STOP to cancel."}})
    assert edited.json()["first_approvals"] == [] and edited.json()["text_author"] == "bob"
    assert client.post(f"{url}/approve", headers=signed("ann")).json()["status"] == "draft"
    by_author = client.post(f"{url}/approve", headers=signed("bob"))
    assert by_author.status_code == 409 and "last edit" in by_author.json()["detail"]
    done = client.post(f"{url}/approve", headers=signed("cat")).json()
    assert done["status"] == "approved" and done["approved_by"] == "ann, cat"
    actions = [(a["actor"], a["action"]) for a in client.get(
        url, headers={"Authorization": f"Bearer {two_reviewers.admin_token}"}).json()["audit"]]
    assert actions == [("system", "create"), ("ann", "approve_first"), ("bob", "edit"),
                       ("ann", "approve_first"), ("cat", "approve")]
    # A warning under the same policy needs one reviewer.
    warning = _draft(two_reviewers, severity="warning", region="us/wa/king-county/98122")
    assert client.post(f"/v1/alerts/{warning}/approve", headers=signed("ann")).json()["status"] \
        == "approved"


def test_operators_token_and_named_admins_are_logged_with_who(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    operator = {"Authorization": f"Bearer {settings.admin_token}"}
    admin = official_headers(settings, "ada.admin", role="admin")
    reviewer = official_headers(settings, "rev")
    with caplog.at_level("INFO", logger="lookout.operators"):
        assert client.get("/v1/deliveries", headers=operator).status_code == 200
        assert client.get("/v1/deliveries", headers=admin).status_code == 200
        assert client.get("/v1/deliveries", headers=reviewer).status_code == 403
    said = [r.getMessage() for r in caplog.records if r.name == "lookout.operators"]
    assert said == ["operator admin-token: GET /v1/deliveries",
                    "operator official:ada.admin: GET /v1/deliveries"]


def test_the_dev_key_pair_is_refused_in_prod(settings: Settings) -> None:
    from shared.settings import InsecureSettingsError

    prod = settings.model_copy(update={"env": "prod"})
    with pytest.raises(InsecureSettingsError):
        public_key(prod)


def test_a_review_credential_acts_once_and_a_replay_is_refused(
    client: TestClient, settings: Settings
) -> None:
    first, second = _draft(settings), _draft(settings, region="us/wa/king-county/98101")
    headers = official_headers(settings, "rita.reviewer")
    assert client.post(f"/v1/alerts/{first}/reject", headers=headers).status_code == 200
    before = _state(settings, second)
    replay = client.post(f"/v1/alerts/{second}/approve", headers=headers)
    assert replay.status_code == 401
    assert replay.headers["content-type"].startswith("application/problem+json")
    assert "used already" in replay.json()["detail"]
    assert _state(settings, second) == before  # nothing changed, nothing audited
    # recorded in the alerts database, not in this process: a credential another alerts
    # API process has spent is refused here too
    other = official_headers(settings, "rita.reviewer")
    token = other["Authorization"].removeprefix("Bearer ")
    credentials.spend(settings, verify(settings, token))
    assert client.post(f"/v1/alerts/{second}/approve", headers=other).status_code == 401
    fresh = client.post(f"/v1/alerts/{second}/approve",
                        headers=official_headers(settings, "rita.reviewer"))
    assert fresh.status_code == 200 and fresh.json()["approved_by"] == "rita.reviewer"


def test_used_credentials_are_pruned_after_they_expire(settings: Settings) -> None:
    old = verify(settings, official_headers(settings, now=time.time() - 30, ttl=60)[
        "Authorization"].removeprefix("Bearer "))
    credentials.spend(settings, old)
    later = datetime.fromtimestamp(old.expires_at, UTC) + timedelta(minutes=1)
    new = verify(settings, official_headers(settings)["Authorization"].removeprefix("Bearer "))
    credentials.spend(settings, new, now=later)
    with session_scope(settings.sqlalchemy_url) as session:
        kept = set(session.scalars(select(UsedCredential.jti)))
    assert kept == {new.jti}
