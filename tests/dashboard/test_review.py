"""Review actions from the dashboard: forms with CSRF tokens, sent to the alerts API with
the official's signed credential; viewers, reviewers of other regions and forged forms are
refused and nothing changes; the alerts audit names the official; subscriber data."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.alerts.models import Alert, AlertAudit
from services.alerts.service.signals import alert_from_signal
from services.dashboard import alerts_client
from services.dashboard.account_models import DashboardAudit
from shared.db import session_scope
from shared.settings import Settings
from testing.builders import contamination_signal
from tests.alerts.test_service import add_subscriber
from tests.dashboard.conftest import MakeOfficial, form_csrf, login

REGION = "us/wa/king-county/98104"


def _draft(settings: Settings) -> uuid.UUID:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings,
                                          contamination_signal(REGION, severity="warning"))
        assert alert.status == "draft"
        return alert.id


def _alert(settings: Settings, alert_id: uuid.UUID) -> tuple[str, str | None, list[str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None
        actors = list(session.scalars(select(AlertAudit.actor).where(
            AlertAudit.alert_id == alert_id).order_by(AlertAudit.id)))
        return alert.status, alert.approved_by, actors


def _dash_audit(settings: Settings) -> list[tuple[str, str, str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return [(a.actor, a.action, a.outcome) for a in session.scalars(
            select(DashboardAudit).where(DashboardAudit.action.like("alert_%"))
            .order_by(DashboardAudit.id))]


def test_a_reviewer_approves_from_the_review_page_and_the_audit_names_them(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    alert_id = _draft(settings)
    make_official("rita", regions="us/wa")
    login(client, "rita")
    page = client.get(f"/alerts/{alert_id}/review")
    assert page.status_code == 200 and 'id="approve"' in page.text
    token = form_csrf(page.text)
    done = client.post(f"/alerts/{alert_id}/approve",
                       data={"csrf_token": token, "actor": "someone else"},
                       headers={"X-Actor": "typed name"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == \
        f"/alerts/{alert_id}/review"
    assert _alert(settings, alert_id) == ("approved", "rita", ["system", "rita"])
    assert _dash_audit(settings) == [("rita", "alert_approve", "ok")]
    shown = client.get(f"/alerts/{alert_id}/review").text
    assert 'id="approved-by">rita<' in shown


def test_a_viewer_gets_403_and_nothing_changes(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    alert_id = _draft(settings)
    make_official("vera", role="viewer")
    login(client, "vera")
    page = client.get(f"/alerts/{alert_id}/review")
    assert page.status_code == 200  # a viewer sees
    refused = client.post(f"/alerts/{alert_id}/approve",
                          data={"csrf_token": form_csrf(page.text)})
    assert refused.status_code == 403 and "viewer" in refused.text
    assert _alert(settings, alert_id) == ("draft", None, ["system"])
    assert _dash_audit(settings) == [("vera", "alert_approve", "refused")]


def test_a_reviewer_of_another_region_gets_403_and_nothing_changes(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    alert_id = _draft(settings)
    make_official("otto", regions="us/or")
    login(client, "otto")
    token = form_csrf(client.get("/account/totp").text)
    for action, data in (("approve", {}), ("edit", {"text_en": "Other text. STOP to end."}),
                         ("reject", {"reason": "no"})):
        refused = client.post(f"/alerts/{alert_id}/{action}", data={"csrf_token": token,
                                                                    **data})
        assert refused.status_code == 403, action
        assert "outside the regions" in refused.text
    assert _alert(settings, alert_id) == ("draft", None, ["system"])
    assert [a[2] for a in _dash_audit(settings)] == ["refused"] * 3


def test_a_form_without_its_csrf_token_changes_nothing(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    alert_id = _draft(settings)
    make_official("rex")
    login(client, "rex")
    for data in ({}, {"csrf_token": "forged"}):
        refused = client.post(f"/alerts/{alert_id}/approve", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert _alert(settings, alert_id) == ("draft", None, ["system"])


def test_reject_needs_a_reason_and_an_edit_after_approval_goes_back_to_review(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    alert_id = _draft(settings)
    make_official("ann")
    make_official("bob")
    login(client, "ann")
    token = form_csrf(client.get("/account/totp").text)
    assert client.post(f"/alerts/{alert_id}/reject", data={"csrf_token": token}
                       ).status_code == 422
    client.post(f"/alerts/{alert_id}/approve", data={"csrf_token": token})
    client.cookies.clear()
    login(client, "bob")
    token = form_csrf(client.get("/account/totp").text)
    text = "Lookout ALERT: fentanyl found in cocaine (98104). Reply STOP to cancel."
    edited = client.post(f"/alerts/{alert_id}/edit",
                         data={"csrf_token": token, "text_en": text})
    assert edited.status_code == 200  # followed to the review page
    assert 'id="alert-status">draft<' in edited.text
    assert _alert(settings, alert_id) == ("draft", None, ["system", "ann", "bob"])


def test_an_alerts_service_that_does_not_answer_is_a_502_and_audited(
    client: TestClient, settings: Settings, make_official: MakeOfficial,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    alert_id = _draft(settings)
    make_official("rita")
    login(client, "rita")
    token = form_csrf(client.get("/account/totp").text)
    assert client.post(f"/alerts/{alert_id}/publish", data={"csrf_token": token}
                       ).status_code == 404

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(alerts_client, "transport", httpx.MockTransport(refuse))
    down = client.post(f"/alerts/{alert_id}/approve", data={"csrf_token": token})
    assert down.status_code == 502 and "not taken" in down.text
    assert _alert(settings, alert_id) == ("draft", None, ["system"])
    assert _dash_audit(settings) == [("rita", "alert_approve", "error")]


def test_an_admin_exports_a_subscriber_by_name_and_it_is_audited(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    add_subscriber(settings, "+12065550180", REGION)
    make_official("root", role="admin", regions="*")
    make_official("rev")
    login(client, "rev")
    assert client.get("/admin/subscribers").status_code == 403
    client.cookies.clear()
    login(client, "root")
    token = form_csrf(client.get("/admin/subscribers").text)
    shown = client.post("/admin/subscribers", data={"csrf_token": token,
                                                    "phone": "+12065550180",
                                                    "action": "export"})
    assert shown.status_code == 200 and "+12065550180" in shown.text
    missing = client.post("/admin/subscribers", data={"csrf_token": token,
                                                      "phone": "+12065550199",
                                                      "action": "export"})
    assert missing.status_code == 404
    with session_scope(settings.sqlalchemy_url) as session:
        rows = [(a.actor, a.action, a.outcome, a.target) for a in session.scalars(
            select(DashboardAudit).where(DashboardAudit.action == "subscriber_export")
            .order_by(DashboardAudit.id))]
    assert rows == [("root", "subscriber_export", "ok", "phone ending 80"),
                    ("root", "subscriber_export", "failed", "phone ending 99")]
