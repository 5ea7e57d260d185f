"""Alert lifecycle: merge, escalation, per-region policy, expiry, and the officials' API
(approve, edit with segment counts, reject, cancel, update, all-clear) with its audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select

from services.alerts.api import app
from services.alerts.models import Alert, AlertAudit, Delivery
from services.alerts.service.fanout import fan_out
from services.alerts.service.policy import approval_block, auto_approves
from services.alerts.service.review import approve
from services.alerts.service.signals import alert_from_signal
from services.detection.config import load_config
from services.detection.processors import Processor
from services.detection.tables import Tables
from shared.db import session_scope, utcnow
from shared.events import (
    ContaminationSignalV1,
    DrugCheckResultV1,
    Severity,
    SpikeSignalV1,
    signal_adapter,
)
from shared.settings import AlertRegionPolicy, Settings, get_settings
from testing.builders import contamination_signal, result_event
from tests.alerts.test_service import add_subscriber
from tests.credentials import official_headers


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def _auth(settings: Settings, actor: str = "dr.ops") -> dict[str, str]:
    """A reviewer's signed credential (what the dashboard sends for review actions)."""
    return official_headers(settings, actor)


def _admin(settings: Settings) -> dict[str, str]:
    """The operators' token: reads the alerts, no longer reviews them."""
    return {"Authorization": f"Bearer {settings.admin_token}"}


def _draft(settings: Settings, region: str = "us/wa/king-county/98104") -> uuid.UUID:
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings,
                                          contamination_signal(region, severity="warning"))
        assert alert.status == "draft"
        return alert.id


def test_signals_for_one_region_and_substance_merge_and_escalate(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        first = alert_from_signal(session, settings,
                                          contamination_signal(severity="info"))
        second = alert_from_signal(session, settings,
                                           contamination_signal(severity="warning"))
        assert second.id == first.id and second.signal_count == 2
        assert second.severity == "warning" and second.status == "draft"
        third = alert_from_signal(session, settings, contamination_signal())
        assert third.id == first.id and third.severity == "critical"
        assert third.status == "approved"  # critical: auto-approved by the default policy
        assert "(critical)" in third.body_en
        other = alert_from_signal(session, settings,
                                          contamination_signal("us/wa/king-county/98105"))
        assert other.id != first.id
        assert session.scalar(select(func.count()).select_from(Alert)) == 2


def test_no_merge_outside_the_window(settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        first = alert_from_signal(session, settings,
                                          contamination_signal(severity="warning"))
        first.created_at = utcnow() - timedelta(hours=7)
    with session_scope(settings.sqlalchemy_url) as session:
        again = alert_from_signal(session, settings,
                                          contamination_signal(severity="warning"))
        assert again.id != first.id


def signal_of(region: str = "us/wa/king-county/98104", severity: Severity = "critical",
              pattern: str = "unexpected_adulterant", identified_by: tuple[str, ...] = (),
              substance: str = "fentanyl", sold_as: str | None = "cocaine",
              ) -> ContaminationSignalV1:
    return contamination_signal(region, severity).model_copy(update={
        "pattern": pattern, "identified_by": list(identified_by), "substance_id": substance,
        "substance_name": substance.title(), "sold_as_id": sold_as,
        "sold_as_name": sold_as.title() if sold_as else None})


def spike_signal(region: str, severity: Severity) -> SpikeSignalV1:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return SpikeSignalV1(producer="test", region_id=region, region_name="x", severity=severity,
                         occurred_at=at, window_start=at, window_end=at + timedelta(days=1),
                         observed=9, expected=2, upperbound=5, method="poisson", score=2.5)


POLICY = {
    "us/wa": AlertRegionPolicy(severities=frozenset({"warning", "critical"})),
    "us/wa/pierce-county": AlertRegionPolicy(),
    "us/or": AlertRegionPolicy(severities=frozenset({"critical"}), lab_confirmed=True),
    "us/or/lane-county": AlertRegionPolicy(severities=frozenset({"warning", "critical"}),
                                           as_sold_novel=True),
}
WA, PIERCE, OR, LANE = ("us/wa/king-county/98104", "us/wa/pierce-county/98402",
                        "us/or/multnomah-county/97201", "us/or/lane-county/97401")
FTIR, GCMS, LCMS = ("ftir",), ("ftir", "gc_ms"), ("lc_ms",)


@pytest.mark.parametrize("env, signal, approved, reason", [
    # severities per region prefix (the longest wins); elsewhere the global default
    ("test", signal_of(WA, "warning"), True, None),
    ("test", signal_of(WA, "info"), False, "severity"),
    ("test", signal_of(PIERCE, "critical"), False, "severity"),
    ("test", signal_of("us/ca/x", "warning"), False, "severity"),
    ("test", signal_of("us/ca/x", "critical"), True, None),
    # lab_confirmed: a field test is not enough; GC-MS or LC-MS is
    ("test", signal_of(OR, "critical"), False, "not lab-confirmed"),
    ("test", signal_of(OR, "critical", identified_by=FTIR), False, "not lab-confirmed"),
    ("test", signal_of(OR, "critical", identified_by=GCMS), True, None),
    ("test", signal_of(OR, "critical", identified_by=LCMS), True, None),
    ("test", signal_of(OR, "warning", identified_by=GCMS), False, "severity"),
    # the nested region's own policy replaces the parent's (no lab requirement in Lane)
    ("test", signal_of(LANE, "warning", identified_by=FTIR), True, None),
    # a novel substance exactly as sold: review, even in dev, unless the region allows it
    ("test", signal_of(WA, "warning", "novel_substance", substance="cocaine"), False,
     "novel substance as sold"),
    ("dev", signal_of(WA, "critical", "novel_substance", identified_by=GCMS,
                      substance="cocaine"), False, "novel substance as sold"),
    ("test", signal_of(LANE, "warning", "novel_substance", substance="cocaine"), True, None),
    # novel, but not what was sold; or nothing sold-as known: the usual rules
    ("test", signal_of(WA, "warning", "novel_substance"), True, None),
    ("test", signal_of(WA, "warning", "novel_substance", sold_as=None), True, None),
    # dev approves everything else
    ("dev", signal_of(OR, "info"), True, None),
    ("dev", signal_of(PIERCE, "warning"), True, None),
])
def test_policy_table(settings: Settings, env: str, signal: ContaminationSignalV1,
                      approved: bool, reason: str | None) -> None:
    policy = settings.model_copy(update={"alert_policy_json": POLICY, "env": env})
    assert approval_block(policy, signal) == reason
    assert auto_approves(policy, signal) is approved


def test_lab_confirmation_does_not_apply_to_overdose_spikes(settings: Settings) -> None:
    policy = settings.model_copy(update={"alert_policy_json": POLICY})
    assert auto_approves(policy, spike_signal(OR, "critical"))
    assert not auto_approves(policy, spike_signal(OR, "warning"))


def test_global_default_policy_via_the_empty_prefix(settings: Settings) -> None:
    policy = settings.model_copy(update={"alert_policy_json": {
        "": AlertRegionPolicy(severities=frozenset({"critical"}), lab_confirmed=True)}})
    assert not auto_approves(policy, signal_of("us/ca/x", identified_by=FTIR))
    assert auto_approves(policy, signal_of("us/ca/x", identified_by=GCMS))


def test_unknown_policy_options_are_refused_when_the_settings_load() -> None:
    with pytest.raises(ValidationError, match="lab_confirmd"):
        Settings(env="test", alert_policy_json={
            "us/wa": {"severities": ["critical"], "lab_confirmd": True}})
    with pytest.raises(ValidationError, match="severe"):
        Settings(env="test", alert_policy_json={"us/wa": ["severe"]})


def test_a_qualifying_signal_approves_the_draft_it_merges_into(settings: Settings) -> None:
    """An unconfirmed draft waits for review; the lab's confirmation of the same substance
    in the region approves it, with the text of the confirmed signal."""
    policy = settings.model_copy(update={"alert_policy_json": POLICY})
    with session_scope(policy.sqlalchemy_url) as session:
        draft = alert_from_signal(session, policy,
                                          signal_of(OR, "critical", identified_by=FTIR))
        assert draft.status == "draft"
    with session_scope(policy.sqlalchemy_url) as session:
        merged = alert_from_signal(session, policy,
                                           signal_of(OR, "critical", identified_by=GCMS))
        assert merged.id == draft.id and merged.status == "approved"
        assert merged.approved_by == "policy:auto" and merged.signal_count == 2
        actions = list(session.scalars(select(AlertAudit.action)
                                       .where(AlertAudit.alert_id == draft.id)
                                       .order_by(AlertAudit.at)))
        assert actions == ["create", "merge_approve"]


def test_an_as_sold_draft_is_approved_by_a_real_adulterant_of_the_same_substance(
    settings: Settings,
) -> None:
    """Fentanyl new to the region in a sample sold as fentanyl: review. Then fentanyl in a
    sample sold as cocaine: that warning goes out, with its own text."""
    with session_scope(settings.sqlalchemy_url) as session:
        draft = alert_from_signal(session, settings, signal_of(
            WA, "critical", "novel_substance", sold_as="fentanyl"))
        assert draft.status == "draft"
        assert "sold as Fentanyl" in draft.body_en
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, signal_of(WA, "critical"))
        assert alert.id == draft.id and alert.status == "approved"
        assert "sold as Cocaine" in alert.body_en


def test_an_expired_alert_is_not_fanned_out(settings: Settings) -> None:
    add_subscriber(settings, "+12065550161", "us/wa/king-county/98104")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings, contamination_signal())
        alert.expires_at = utcnow() - timedelta(seconds=1)
        assert fan_out(session, alert) == 0
        assert alert.status == "expired"
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


def test_review_queue_edit_approve_with_audit(client: TestClient, settings: Settings) -> None:
    alert_id = _draft(settings)
    queue = client.get("/v1/alerts?status=draft", headers=_admin(settings)).json()
    assert [a["id"] for a in queue] == [str(alert_id)]
    assert queue[0]["segments"]["en"] == 1

    long_text = "Fentanyl found in cocaine. " * 13  # > 306 characters: 3 segments
    response = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": long_text}},
                            headers=_auth(settings))
    assert response.status_code == 422
    assert response.json()["segments"]["en"] == 3
    forced = client.patch(f"/v1/alerts/{alert_id}",
                          json={"texts": {"en": long_text}, "force": True},
                          headers=_auth(settings))
    assert forced.status_code == 200 and forced.json()["segments"]["en"] == 3
    short = "Lookout ALERT: fentanyl in cocaine in 98104. Start low. Reply STOP to cancel."
    edited = client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"en": short}},
                          headers=_auth(settings)).json()
    assert edited["texts"]["en"] == short and edited["segments"]["en"] == 1

    # The shared admin token no longer approves; a typed actor counts for nothing.
    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers={**_admin(settings), "X-Actor": "dr.ops"}).status_code == 401
    approved = client.post(f"/v1/alerts/{alert_id}/approve", headers=_auth(settings))
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["approved_by"] == "dr.ops"
    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers=_auth(settings)).status_code == 409

    detail = client.get(f"/v1/alerts/{alert_id}", headers=_admin(settings)).json()
    actions = [(a["actor"], a["action"]) for a in detail["audit"]]
    assert actions == [("system", "create"), ("dr.ops", "edit"), ("dr.ops", "edit"),
                       ("dr.ops", "approve")]
    last_edit = detail["audit"][2]
    assert last_edit["before"]["texts"]["en"] == long_text.strip()
    assert last_edit["after"]["texts"]["en"] == short


def test_approve_refuses_a_text_over_two_segments_unless_forced(
    client: TestClient, settings: Settings
) -> None:
    alert_id = _draft(settings)
    client.patch(f"/v1/alerts/{alert_id}", json={"texts": {"es": "x" * 400}, "force": True},
                 headers=_auth(settings))
    refused = client.post(f"/v1/alerts/{alert_id}/approve", headers=_auth(settings))
    assert refused.status_code == 422 and refused.json()["segments"]["es"] == 3
    ok = client.post(f"/v1/alerts/{alert_id}/approve", json={"force": True},
                     headers=_auth(settings))
    assert ok.status_code == 200


def test_reject_and_cancel(client: TestClient, settings: Settings) -> None:
    rejected = _draft(settings)
    body = client.post(f"/v1/alerts/{rejected}/reject",
                       json={"actor": "someone else", "reason": "not in our area"},
                       headers={**_auth(settings, "dr.b"), "X-Actor": "typed"}).json()
    assert body["status"] == "rejected"
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalars(select(AlertAudit).where(AlertAudit.alert_id == rejected)
                              .order_by(AlertAudit.id.desc())).first()
        assert row is not None and (row.actor, row.action) == ("dr.b", "reject")
        assert row.after is not None and row.after["reason"] == "not in our area"

    add_subscriber(settings, "+12065550162", "us/wa/king-county/98105")
    with session_scope(settings.sqlalchemy_url) as session:
        alert = alert_from_signal(session, settings,
                                          contamination_signal("us/wa/king-county/98105"))
        assert fan_out(session, alert) == 1
        sending = alert.id
    cancelled = client.post(f"/v1/alerts/{sending}/cancel", headers=_auth(settings)).json()
    assert cancelled["status"] == "cancelled"
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(Delivery.status)) == "skipped"


def test_update_and_all_clear_are_new_drafts(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.sqlalchemy_url) as session:
        parent = alert_from_signal(session, settings, contamination_signal()).id
    update = client.post(f"/v1/alerts/{parent}/update", headers=_auth(settings))
    assert update.status_code == 201
    assert update.json()["kind"] == "update" and update.json()["status"] == "draft"
    assert update.json()["texts"]["en"].startswith("UPDATE: ")
    clear = client.post(f"/v1/alerts/{parent}/all-clear", headers=_auth(settings)).json()
    assert clear["kind"] == "all_clear" and clear["parent_id"] == str(parent)
    assert "over" in clear["texts"]["en"] and "STOP" in clear["texts"]["fr"]
    assert all(n <= 2 for n in clear["segments"].values())


def test_lifecycle_needs_a_credential(client: TestClient, settings: Settings) -> None:
    alert_id = _draft(settings)
    assert client.post(f"/v1/alerts/{alert_id}/approve",
                       headers={"X-Actor": "x"}).status_code == 401
    assert client.get(f"/v1/alerts/{uuid.uuid4()}", headers=_admin(settings)).status_code \
        == 404


def test_worker_housekeeping_fans_out_approved_expires_and_finishes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.alerts import agents

    monkeypatch.setattr(agents, "settings", settings)
    add_subscriber(settings, "+12065550171", "us/wa/king-county/98104")
    approved = _draft(settings)
    expiring = _draft(settings, "us/wa/king-county/98105")
    with session_scope(settings.sqlalchemy_url) as session:
        approve(session, approved, "dr.ops")
        row = session.get(Alert, expiring)
        assert row is not None
        row.expires_at = utcnow() - timedelta(minutes=1)
    assert agents._housekeeping() == [approved]
    assert agents._fan_out(approved) is True  # what the dispatcher does next
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.get(Alert, expiring).status == "expired"  # type: ignore[union-attr]
        delivery = session.scalar(select(Delivery).where(Delivery.alert_id == approved))
        assert delivery is not None and delivery.status == "pending"
        delivery.status = "queued"
    assert agents._housekeeping() == []
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.get(Alert, approved).status == "sent"  # type: ignore[union-attr]


def test_detection_signals_say_how_the_substance_was_identified(settings: Settings) -> None:
    """The detection processor fills `identified_by` from the result's substances, which is
    what the lab_confirmed policy reads."""
    sent: list[str] = []

    async def send(_key: str, payload: str) -> None:
        sent.append(payload)

    def detect(result: DrugCheckResultV1) -> None:  # fresh tables: no cooldown between
        processor = Processor(load_config(Settings(env="test")), Tables.in_memory(), send)
        asyncio.run(processor.on_result(result, 0, 0))

    found = (("fentanyl", "opioid", 3),)
    field_test = result_event(found=found)
    lab = result_event(found=found)
    lab = lab.model_copy(update={"substances": [
        *field_test.substances,
        field_test.substances[0].model_copy(update={"method": "gc_ms"})]})
    detect(field_test)
    detect(lab)
    signals = [signal_adapter.validate_json(p) for p in sent]
    adulterant = [s for s in signals if isinstance(s, ContaminationSignalV1)
                  and s.pattern == "unexpected_adulterant"]
    assert [s.identified_by for s in adulterant] == [["ftir"], ["ftir", "gc_ms"]]
    policy = settings.model_copy(update={"alert_policy_json": POLICY})
    assert [auto_approves(policy, s.model_copy(update={"region_id": OR}))
            for s in adulterant] == [False, True]


def test_recovery_at_start_waits_for_another_workers_fan_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker starting while another fans the same alert out met the other's unique
    (alert, subscriber) rows and crashed; it now tries again and publishes the jobs."""
    from sqlalchemy.exc import IntegrityError

    from services.alerts import agents

    alert_id = uuid.uuid4()
    monkeypatch.setattr(agents, "settings", settings)
    monkeypatch.setattr(agents, "_sending_alerts", lambda: [alert_id])
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    calls: list[uuid.UUID] = []

    async def fan_out_and_publish(aid: uuid.UUID) -> None:
        calls.append(aid)
        if len(calls) < 3:
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    monkeypatch.setattr(agents, "fan_out_and_publish", fan_out_and_publish)
    asyncio.run(agents.recover_on_start())
    assert calls == [alert_id] * 3


async def _no_sleep(_delay: float) -> None:
    return None
