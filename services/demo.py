"""Demo data for `make run`: one site with a stable dev API key, one active subscriber, and
the demo provider directory."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from services.alerts.models import Subscriber, Subscription
from services.ingest.models import ApiKey, Site
from services.ingest.service.sites import create_site
from services.referrals.hsds import ImportReport, import_path
from shared.crypto import API_KEY_PREFIX, encrypt_phone, hash_api_key, phone_lookup_hash
from shared.db import session_scope
from shared.regions import by_postal_code
from shared.settings import Settings

DEMO_SITE = "Demo Drug Checking Site"
DEMO_POSTAL_CODE = "98104"  # Seattle, King County, WA
DEMO_PHONE = "+12065550100"  # a fictional 555-01xx number
CONSENT_TEXT = "Demo subscriber created by `lookout seed` for local development."
# ~50 fictional providers around Seattle (the demo region) and in British Columbia, as an
# HSDS 3.0 data package: invented names and addresses, 555 phone numbers.
DEMO_DIRECTORY = Path(__file__).resolve().parent / "referrals" / "demo_directory"


@dataclass(frozen=True)
class Demo:
    api_key: str
    region_id: str
    region_name: str


def demo_api_key(settings: Settings) -> str:
    """Stable for a given secret, so every `make run` prints the same key."""
    digest = hmac.new(settings.secret_key.encode(), b"demo-site", hashlib.sha256).hexdigest()
    return f"{API_KEY_PREFIX}demo_{digest[:32]}"


def seed_demo(settings: Settings) -> Demo:
    if settings.env == "prod":
        raise RuntimeError("demo data is for dev and test only")
    key = demo_api_key(settings)
    region = by_postal_code(DEMO_POSTAL_CODE)
    with session_scope(settings.sqlalchemy_url) as session:
        if session.scalar(select(Site).where(Site.name == DEMO_SITE)) is None:
            create_site(session, DEMO_SITE, ["results", "reports", "referrals"], api_key=key)
        elif session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))) is None:
            raise RuntimeError("the demo site exists with another key (LOOKOUT_SECRET_KEY "
                               "changed?); delete var/ to start over")
        phone_hash = phone_lookup_hash(settings.secret_key, DEMO_PHONE)
        subscriber = session.scalar(select(Subscriber).where(Subscriber.phone_hash == phone_hash))
        if subscriber is None:
            subscriber = Subscriber(
                phone_encrypted=encrypt_phone(settings.secret_key, DEMO_PHONE),
                phone_hash=phone_hash, language="en", status="active",
                consent_at=datetime.now(UTC), consent_channel="seed", consent_text=CONSENT_TEXT,
            )
            session.add(subscriber)
            session.flush()
            session.add(Subscription(subscriber_id=subscriber.id, region_id=region.id))
        subscriber.is_test = True  # receives `lookout smoke`'s canary alerts
    seed_directory(settings)
    return Demo(api_key=key, region_id=region.id, region_name=region.name)


def seed_directory(settings: Settings) -> ImportReport:
    """Import the demo directory (upserted by id: seeding twice changes nothing)."""
    with session_scope(settings.sqlalchemy_url) as session:
        report = import_path(session, DEMO_DIRECTORY)
    if report.rejected:
        raise RuntimeError("the demo directory has rejected records:\n" + report.summary())
    return report
