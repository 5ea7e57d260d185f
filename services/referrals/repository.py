"""Referrals' directory reads for the admin API: one function per query."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.referrals import models as m


def services_by_name(session: Session) -> list[m.Service]:
    return list(session.scalars(select(m.Service).order_by(m.Service.name)))


def capacity_rows(session: Session, service_id: str) -> list[m.ServiceCapacity]:
    return list(session.scalars(select(m.ServiceCapacity).where(
        m.ServiceCapacity.service_id == service_id).order_by(m.ServiceCapacity.id)))


def capacity_available(session: Session, service_ids: Sequence[str]) -> dict[str, float]:
    """The services' available capacity (the sum of their rows), in one query; a service
    without capacity rows is absent."""
    rows = session.execute(
        select(m.ServiceCapacity.service_id, func.sum(m.ServiceCapacity.available))
        .where(m.ServiceCapacity.service_id.in_(service_ids))
        .group_by(m.ServiceCapacity.service_id)).all()
    return {service_id: float(total) for service_id, total in rows}


def dev_messages(session: Session, limit: int) -> list[m.DevSmsMessage]:
    return list(session.scalars(select(m.DevSmsMessage).order_by(m.DevSmsMessage.id.desc())
                                .limit(limit)))


def status_changes(session: Session, referral_id: uuid.UUID) -> list[m.StatusChange]:
    return list(session.scalars(select(m.StatusChange)
                                .where(m.StatusChange.referral_id == referral_id)
                                .order_by(m.StatusChange.at)))


def provider_notices(session: Session, referral_id: uuid.UUID) -> list[m.ProviderNotice]:
    return list(session.scalars(select(m.ProviderNotice)
                                .where(m.ProviderNotice.referral_id == referral_id)))
