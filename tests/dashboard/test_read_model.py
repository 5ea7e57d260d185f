"""The dashboard's read model: events applied once, canary kept apart, the pages' queries."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, func, select

from services.dashboard import models, repository
from services.dashboard.consumer import READ_MODEL, apply_batch
from shared.db import session_scope
from tests.dashboard.events import NOW, ZIP, records, story


def table_contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the read model (not when events were applied, not the change log)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with session_scope(url) as session:
        for model in READ_MODEL:
            table = model.__table__
            assert isinstance(table, Table)
            cols = [c for c in table.columns if c.name != "applied_at"]
            out[table.name] = sorted((tuple(repr(v) for v in row)
                                      for row in session.execute(select(*cols))), key=str)
    return out


def change_count(url: str) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).select_from(models.Change)) or 0)


def test_a_redelivered_event_changes_nothing(db_url: str) -> None:
    batch = records(story())
    assert apply_batch(db_url, batch) == len(batch)
    first, changes = table_contents(db_url), change_count(db_url)
    assert len(first["dashboard_alerts"]) == 3 and len(first["dashboard_signals"]) == 3
    # The whole story again, and one event redelivered inside a later batch.
    assert apply_batch(db_url, batch) == 0
    assert apply_batch(db_url, batch[5:6] + batch[-3:]) == 0
    assert table_contents(db_url) == first
    assert change_count(db_url) == changes


def test_an_older_alert_state_arriving_late_does_not_win(db_url: str) -> None:
    items = story()
    alert_events = [(i, item) for i, item in enumerate(items)
                    if getattr(item[1], "alert_id", None) == uuid.UUID(int=101)]
    sent_index = alert_events[-1][0]
    reordered = [item for i, item in enumerate(items) if i != sent_index - 1]
    reordered.append(items[sent_index - 1])  # a counts event after "sent"
    apply_batch(db_url, records(reordered))
    with session_scope(db_url) as session:
        alert = session.get(models.Alert, uuid.UUID(int=101))
        assert alert is not None
        assert alert.status == "sent" and alert.deliveries == {"delivered": 39, "failed": 1}


def test_canary_traffic_is_kept_apart(db_url: str) -> None:
    apply_batch(db_url, records(story()))
    with session_scope(db_url) as session:
        page = repository.now_page(session, NOW)
        supply = repository.drug_supply(session, NOW, days=30)
        results = repository.trends(session, NOW, source="results", days=7)
        mapped = repository.map_data(session, NOW)
        perf = repository.performance(session, NOW)
    assert all(not a.kind == "canary" for a in page.recent_alerts)
    assert {a.alert_id for a in page.recent_alerts} == {uuid.UUID(int=100), uuid.UUID(int=101)}
    assert page.regions[0].signals == 2  # the canary signal is not an open signal
    assert supply.samples == 3  # three real results, not the canary's
    assert sum(p.count for p in results.points) == 3  # not 4: the canary is left out
    assert sum(a.results for a in mapped) == 3 and sum(a.open_signals for a in mapped) == 2
    assert sum(n for _r, _m, n in perf.alerts_per_region_month) == 2
    # The smoke round trip reads only the canary's events.
    assert page.smoke is not None and page.smoke.seconds == 3.0


def test_now_and_review_queue(db_url: str) -> None:
    apply_batch(db_url, records(story()))
    with session_scope(db_url) as session:
        page = repository.now_page(session, NOW)
    (region,) = page.regions
    assert region.region_id == ZIP and region.worst_severity == "warning"
    assert region.patterns == ["spike", "unexpected_adulterant"]
    (waiting,) = page.waiting
    assert waiting.alert_id == uuid.UUID(int=100) and waiting.review_reason == "severity"
    assert waiting.overdue and waiting.waited > timedelta(hours=20)
    names = {s.name: s for s in page.sites}
    assert names["Harbor Drug Checking"].stale is False
    assert names[str(uuid.UUID(int=2))[:8]].stale is False  # a site we know no name of


def test_the_workbench_from_evidence_to_sms(db_url: str) -> None:
    apply_batch(db_url, records(story()))
    with session_scope(db_url) as session:
        bench = repository.workbench(session, uuid.UUID(int=101))
        draft = repository.workbench(session, uuid.UUID(int=100))
        assert repository.workbench(session, uuid.uuid4()) is None
    assert bench is not None and draft is not None
    (spike,) = bench.spikes
    assert (spike.observed, spike.expected, spike.upperbound, spike.method) == \
        (6, 1.1, 3.9, "poisson")
    assert len(bench.reports) == 6 and bench.reports[0].fatal == "yes"
    assert bench.concordance and draft.concordance  # spike + contamination, one county
    assert [s.pattern for s in bench.concordant_signals] == ["unexpected_adulterant"]
    assert len(draft.samples) == 2
    sample = draft.samples[0]
    assert sample.sold_as == "coke" and sample.sold_as_matched is True
    assert [(s.name, s.method, s.confidence) for s in sample.substances][1] == \
        ("Fentanyl", "ftir", 0.9)
    assert sample.strips == {"fentanyl": "positive"} and sample.adverse_reaction is True
    assert sample.site_name == "Harbor Drug Checking"
    assert [e.action for e in bench.audit] == ["create", "approve", "sending", "deliveries",
                                               "deliveries", "sent"]
    assert bench.audit[1].actor == "dr-lee"
    assert bench.funnel.created == 40 and bench.funnel.delivered == 39
    assert bench.funnel.failed == 1 and bench.funnel.audience == 40
    steps = {s.step: s.at for s in bench.timeline}
    assert steps["evidence"] is not None and steps["signal"] is not None
    assert steps["evidence"] < steps["signal"] < steps["draft"]  # type: ignore[operator]
    assert steps["draft"] < steps["decision"] < steps["first_sms"]  # type: ignore[operator]
    assert steps["first_sms"] < steps["delivered"]  # type: ignore[operator]
    assert draft.timeline[3].at is None  # not decided yet
    assert draft.review_reason == "severity"


def test_trends_colour_and_tree(db_url: str) -> None:
    apply_batch(db_url, records(story()))
    with session_scope(db_url) as session:
        daily = repository.trends(session, NOW, region_id=ZIP, days=28)
        county = repository.trends(session, NOW, region_id="us/wa/king-county", days=28)
        fatal = repository.trends(session, NOW, region_id="us/wa", days=7, fatal=True)
        weekly = repository.trends(session, NOW, region_id=ZIP, days=28, bucket="week")
        tree = repository.region_tree(session)
    by_day = {p.start: p for p in daily.points}
    spike_day = by_day[(NOW - timedelta(days=1)).date()]
    assert spike_day.count == 6 and spike_day.colour == "red"
    assert spike_day.from_detector and spike_day.expected == 1.1  # the signal's own
    # The county's series: the ZIP's detector figures do not apply, its own baseline does.
    county_day = next(p for p in county.points if p.start == spike_day.start)
    assert county_day.colour == "red" and not county_day.from_detector
    assert county_day.expected == 1.0
    quiet = by_day[(NOW - timedelta(days=5)).date()]
    assert quiet.count == 1 and quiet.colour == "blue" and quiet.expected == 1.0
    assert by_day[(NOW - timedelta(days=27)).date()].colour == "grey"  # before the data
    assert sum(p.count for p in fatal.points) == 1
    assert all(p.start.weekday() == 0 for p in weekly.points)
    assert sum(p.count for p in weekly.points) >= 20
    (state,) = tree
    assert state.region_id == "us/wa" and state.children[0].region_id == "us/wa/king-county"
    assert state.children[0].children[0].region_id == ZIP
    assert state.count == 26 + 3  # reports and real results, not the canary


def test_drug_supply_referrals_and_performance(db_url: str) -> None:
    apply_batch(db_url, records(story()))
    with session_scope(db_url) as session:
        supply = repository.drug_supply(session, NOW, days=30)
        referrals = repository.referrals_funnel(session, NOW)
        perf = repository.performance(session, NOW)
    (cocaine,) = supply.by_sold_as
    assert cocaine.sold_as == "Cocaine" and cocaine.samples == 3 and cocaine.matched == 3
    assert dict(cocaine.found)["Fentanyl"] == 2 and cocaine.high_risk_samples == 2
    assert {p.substance_id for p in supply.positivity} == {"fentanyl"}
    assert len(supply.line_list) == 3
    assert dict(referrals.steps) == {"requested": 2, "options_sent": 2, "chosen": 1,
                                     "provider_notified": 1, "connected": 1}
    assert dict(referrals.outcomes)["declined"] == 1
    assert referrals.median_to_connected == timedelta(hours=2)
    lat = {x.name: x for x in perf.latencies}
    assert lat["evidence to signal"].count == 2
    assert lat["decision to first SMS"].p50 == timedelta(seconds=2)
    assert perf.review_latency.count == 1  # the draft is not decided; policy ones not counted
    assert perf.review_latency.p50 == timedelta(minutes=12)
    assert [(r.pattern, r.decided, r.rejected) for r in perf.reject_rates] == [("spike", 1, 0)]
