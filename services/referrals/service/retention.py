"""Time-driven work and retention: follow-ups after the delay, no_response after silence,
the purge of personal data past its retention; and the aggregates kept after it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals import texts
from services.referrals.service.common import OPEN, set_status, text_person
from shared.settings import Settings


def tick(session: Session, settings: Settings, now: datetime) -> dict[str, int]:
    """Due work: follow-ups after the delay, no_response after silence."""
    done = {"followups": 0, "no_response": 0}
    due = now - timedelta(seconds=settings.referrals_followup_delay_seconds)
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "provider_notified", m.Referral.followup_sent_at.is_(None),
            m.Referral.notified_at <= due, m.Referral.contact_ref.is_not(None))):
        referral.followup_sent_at = now
        referral.awaiting = "followup"
        text_person(session, referral, texts.followup_text(referral.language),
                    "referral_followup", now)
        done["followups"] += 1
    silent = now - timedelta(seconds=settings.referrals_no_response_seconds)
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "options_sent", m.Referral.awaiting == "choice",
            m.Referral.options_sent_at <= silent)):
        set_status(session, referral, "no_response", "system", now)
        done["no_response"] += 1
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.status == "provider_notified", m.Referral.followup_sent_at <= silent)):
        set_status(session, referral, "no_response", "system", now)
        done["no_response"] += 1
    return done



def purge(session: Session, settings: Settings, now: datetime) -> int:
    """Remove personal data of referrals past their retention; statuses and counts stay."""
    expired = select(m.Consent.referral_id).where(m.Consent.retain_until <= now)
    count = 0
    for referral in session.scalars(select(m.Referral).where(
            m.Referral.purged_at.is_(None), m.Referral.id.in_(expired))):
        if referral.status in OPEN:
            set_status(session, referral, "no_response", "system", now, check=False)
        referral.contact_ref = None
        referral.text = None
        referral.callback_phone_encrypted = None
        referral.awaiting = None
        referral.purged_at = now
        for notice in session.scalars(select(m.ProviderNotice).where(
                m.ProviderNotice.referral_id == referral.id)):
            notice.payload = None
        count += 1
    return count


def stats(session: Session) -> dict[str, Any]:
    """Aggregates for the dashboard (no personal data)."""
    by_status = dict(session.execute(
        select(m.Referral.status, func.count()).group_by(m.Referral.status)).all())
    by_source = dict(session.execute(
        select(m.Referral.source, func.count()).group_by(m.Referral.source)).all())
    return {"total": sum(by_status.values()), "by_status": by_status, "by_source": by_source}
