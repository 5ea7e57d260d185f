"""Who may call the staff API: the admin token, or a site key from the replica of
ingest's keys (`sites.keys.v1`) that has the referrals scope."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.referrals import models as m
from shared.crypto import hash_api_key
from shared.events import SiteKeyChangedV1
from shared.problems import ProblemError
from shared.settings import Settings

STAFF_SCOPE = "referrals"  # a site API key with it may refer people (ingest issues keys)


@dataclass(frozen=True)
class StaffCaller:
    """Who calls the staff API: a site (its API key) or, with `site_id` None, an admin."""

    site_id: uuid.UUID | None
    site_name: str | None = None

    def may_see(self, referral: m.Referral) -> bool:
        return self.site_id is None or referral.site_id == self.site_id


def apply_site_key(session: Session, event: SiteKeyChangedV1) -> m.SiteKey | None:
    """Keep the replica of ingest's keys that may refer: an upsert by key id, so a redelivered
    event changes nothing; an older event never overwrites a newer one, and a revocation is
    final. Ingest announces every key (the dashboard wants every site's name): a key not yet
    replicated and without the referrals scope is not kept (None)."""
    row = session.get(m.SiteKey, event.key_id)
    if row is None:
        if STAFF_SCOPE not in event.scopes:
            return None
        row = m.SiteKey(key_id=event.key_id, site_id=event.site_id, site_name=event.site_name,
                        key_hash=event.key_hash, scopes=list(event.scopes),
                        created_at=event.created_at, updated_at=event.occurred_at)
        session.add(row)
    elif event.occurred_at >= row.updated_at:
        row.site_name, row.scopes = event.site_name, list(event.scopes)
        row.updated_at = event.occurred_at
    if row.revoked_at is None and event.revoked_at is not None:
        row.revoked_at = event.revoked_at
    session.flush()
    return row


def staff_caller(session: Session, settings: Settings, token: str) -> StaffCaller:
    """The admin token, or a site key (from the replica) that has the referrals scope."""
    if hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return StaffCaller(site_id=None)
    row = session.scalars(select(m.SiteKey).where(
        m.SiteKey.key_hash == hash_api_key(token))).first()
    if row is None or row.revoked_at is not None:
        raise ProblemError(401, "Unauthorized", "Unknown or revoked API key.",
                           headers={"WWW-Authenticate": "Bearer"})
    if STAFF_SCOPE not in row.scopes:
        raise ProblemError(403, "Forbidden", f"This API key lacks the {STAFF_SCOPE!r} scope.")
    return StaffCaller(site_id=row.site_id, site_name=row.site_name)


def visible_referral(session: Session, referral_id: uuid.UUID, caller: StaffCaller
                     ) -> m.Referral:
    """The referral, if this caller may see it (a site sees only its own); else 404, as for
    a referral that does not exist."""
    referral = session.get(m.Referral, referral_id)
    if referral is None or not caller.may_see(referral):
        raise ProblemError(404, "Not found", "no such referral")
    return referral
