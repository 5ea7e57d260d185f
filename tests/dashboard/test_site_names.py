"""Sites' names on the dashboard: ingest announces every site key on `sites.keys.v1` (not
only those with the referrals scope), the dashboard's consumer keeps the site's name, and
the Now page shows it (a site no event named shows a short id)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import select

from services.dashboard.consumer import Record, apply_batch
from services.ingest.models import OutboxMessage as IngestOutbox
from services.ingest.service.sites import create_site
from shared.db import session_scope
from shared.events import OverdoseReportV1, SiteKeyChangedV1
from shared.settings import Settings
from shared.topics import OVERDOSE_REPORTS, SITE_KEYS
from tests.dashboard.conftest import MakeOfficial, login


def _report(site_id: uuid.UUID, at: datetime) -> OverdoseReportV1:
    return OverdoseReportV1(producer="test", report_id=uuid.uuid4(), source="ems",
                            occurred_at=at, region_id="us/wa/king-county/98104",
                            region_name="98104 (Seattle, WA)", fatal="no", naloxone_doses=1,
                            suspected_substance_ids=[], site_id=site_id)


def _sites_section(html: str) -> str:
    found = re.search(r'<section class="card" id="now-sites".*?</section>', html, re.S)
    assert found is not None, "no sites section on the Now page"
    return found.group(0)


def test_the_now_page_shows_a_site_name_from_its_key_event(
        client: TestClient, settings: Settings, make_official: MakeOfficial) -> None:
    url = settings.sqlalchemy_url
    with session_scope(url) as session:  # a site whose key is for reports only
        site, _key = create_site(session, "Eastside Outreach", ["reports"])
        site_id = site.id
    with session_scope(url) as session:
        payloads = list(session.scalars(select(IngestOutbox.payload).where(
            IngestOutbox.topic == SITE_KEYS.name)))
    [announced] = [SiteKeyChangedV1.model_validate_json(p) for p in payloads]
    assert (announced.site_id, announced.site_name, announced.scopes) == (
        site_id, "Eastside Outreach", ["reports"])

    now = datetime.now(UTC)
    unnamed = uuid.uuid4()
    reports = [_report(site_id, now - timedelta(hours=1)), _report(unnamed, now)]
    batch: list[tuple[Record, BaseModel]] = [
        (Record(SITE_KEYS.name, announced.model_dump_json().encode(), now), announced)]
    batch += [(Record(OVERDOSE_REPORTS.name, r.model_dump_json().encode(), r.occurred_at), r)
              for r in reports]
    assert apply_batch(url, batch) == 3

    login(client, make_official("ana", role="viewer"))
    page = client.get("/")
    assert page.status_code == 200
    sites = _sites_section(page.text)
    assert "<td>Eastside Outreach</td>" in sites
    assert str(site_id)[:8] not in sites  # the name, not the id
    assert f"<td>{str(unnamed)[:8]}</td>" in sites  # no event named it: a short id
