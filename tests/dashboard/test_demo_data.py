"""`lookout seed`'s dashboard demo data: through ingest's outbox, once, with a draft."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from services.alerts.service.signals import alert_from_signal
from services.dashboard import repository
from services.dashboard.consumer import Record, apply_batch, parse
from services.demo_data import EMS_SITE, IMPORT_SITE, draft_signal, seed_dashboard_data
from services.ingest.models import OutboxMessage
from shared.db import session_scope, utcnow
from shared.settings import Settings


def test_demo_data_reaches_every_page_and_leaves_a_draft(db_url: str, tmp_path: Path) -> None:
    settings = Settings(env="dev", database_url=db_url, var_dir=tmp_path / "var")
    now = utcnow()
    data = seed_dashboard_data(settings, now)
    assert data.seeded and data.results > 200 and data.reports > 60
    assert not seed_dashboard_data(settings, now).seeded  # once
    # What the relay would publish, into the read model.
    with session_scope(db_url) as session:
        rows = session.execute(select(OutboxMessage.topic, OutboxMessage.payload)
                               .order_by(OutboxMessage.id)).all()
    batch = [(Record(topic, payload.encode(), now), parse(topic, payload.encode()))
             for topic, payload in rows]
    assert apply_batch(db_url, batch) == data.results + data.reports + 2  # and 2 sites' keys
    with session_scope(db_url) as session:
        supply = repository.drug_supply(session, now, days=30)
        trend = repository.trends(session, now, region_id="us/wa/king-county", days=30)
        tree = repository.region_tree(session)
        mapped = repository.map_data(session, now)
        sites = repository.site_activity(session, now)
    assert supply.samples == data.results
    assert any(r.sold_as == "Fentanyl" for r in supply.by_sold_as)
    assert sum(p.count for p in trend.points) == data.reports
    assert {n.region_id for n in tree} >= {"ca/bc", "us/wa"}
    assert any(a.region_id.startswith("ca/bc") for a in mapped)
    assert len(sites) == 2 and not any(s.stale for s in sites)
    assert sorted(s.name for s in sites) == sorted([IMPORT_SITE, EMS_SITE])  # their names
    # The demo signal's alert waits for review even in dev (a novel substance as sold).
    signal = draft_signal(settings)
    assert signal is not None and signal.evidence_event_ids
    with session_scope(db_url) as session:
        alert = alert_from_signal(session, settings, signal)
        assert alert.status == "draft"


def test_run_seeds_a_demo_reviewer_once(db_url: str, tmp_path: Path) -> None:
    from services.cli.data import seed_official
    from services.dashboard import accounts

    settings = Settings(env="dev", database_url=db_url, var_dir=tmp_path / "var")
    first = seed_official(settings)
    password = first.split("/ ")[1].split()[0]
    assert "shown once" in first and "password was shown" in seed_official(settings)
    with session_scope(db_url) as session:
        account = accounts.by_name(session, "demo")
        assert account is not None and account.role == "reviewer" and account.regions == ["*"]
        assert accounts.password_hasher(settings).verify(password, account.password_hash or "")
