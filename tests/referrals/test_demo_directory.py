"""The demo directory (services/referrals/demo_directory/, an HSDS package kept as data) imports
whole, where the demo expects it, and a second seeding changes nothing."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from services.demo import seed_directory
from services.referrals import models as m
from shared.db import session_scope
from shared.settings import Settings


def test_the_demo_directory_imports_whole_and_once(settings: Settings) -> None:
    first = seed_directory(settings)
    assert first.rejected == []
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(m.Service)) == 50
        countries = Counter(session.scalars(select(m.Location.country)))
        seattle = session.scalar(select(func.count()).select_from(m.Location).where(
            m.Location.region_id == "us/wa/king-county/98104"))
    assert countries == {"US": 35, "CA": 15}
    assert seattle and seattle >= 1  # the demo region has providers to match
    second = seed_directory(settings)
    assert second.rejected == [] and second.changed == []
    with session_scope(settings.sqlalchemy_url) as session:
        assert session.scalar(select(func.count()).select_from(m.Service)) == 50
