"""Ingest's queries: the reads the service modules make, one function each."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from services.ingest.models import ApiKey, DrugCheck, OverdoseReport, Site

CHUNK = 500  # values per IN (...) list


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def active_key(session: Session,
               key_hash: str) -> tuple[uuid.UUID, uuid.UUID, list[str]] | None:
    """(id, site_id, scopes) of the unrevoked key with this hash."""
    row = session.execute(
        select(ApiKey.id, ApiKey.site_id, ApiKey.scopes)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()
    return None if row is None else row


def drug_check_by_sample(session: Session, site_id: uuid.UUID,
                         sample_id: str) -> DrugCheck | None:
    return session.scalar(
        select(DrugCheck).where(DrugCheck.site_id == site_id, DrugCheck.sample_id == sample_id)
    )


def drug_check_keys(session: Session, site_id: uuid.UUID,
                    sample_ids: Sequence[str]
                    ) -> Iterable[tuple[str, uuid.UUID, uuid.UUID, str, str]]:
    """(sample_id, id, event_id, region_id, content_hash) of the site's stored results
    among these sample ids."""
    for chunk in chunks(sample_ids):
        yield from session.connection().execute(
            select(DrugCheck.sample_id, DrugCheck.id, DrugCheck.event_id, DrugCheck.region_id,
                   DrugCheck.content_hash)
            .where(DrugCheck.site_id == site_id, DrugCheck.sample_id.in_(chunk)))


def report_keys(session: Session, site_id: uuid.UUID,
                keys: Sequence[str]
                ) -> Iterable[tuple[str | None, uuid.UUID, uuid.UUID, str, str]]:
    """(idempotency_key, id, event_id, region_id, content_hash) of the site's stored
    reports among these idempotency keys."""
    for chunk in chunks(keys):
        yield from session.execute(
            select(OverdoseReport.idempotency_key, OverdoseReport.id, OverdoseReport.event_id,
                   OverdoseReport.region_id, OverdoseReport.content_hash)
            .where(OverdoseReport.site_id == site_id,
                   OverdoseReport.idempotency_key.in_(chunk)))


def received_after(session: Session, model: type[DrugCheck] | type[OverdoseReport],
                   site_id: uuid.UUID, cursor: tuple[datetime, uuid.UUID] | None,
                   limit: int) -> list[Any]:
    """The site's rows of `model` received after the cursor (time, last id), oldest first."""
    query = select(model).where(model.site_id == site_id)
    if cursor:
        when, after = cursor
        query = query.where(or_(model.received_at > when,
                                and_(model.received_at == when, model.id > after)))
    return list(session.scalars(query.order_by(model.received_at, model.id).limit(limit)))


def sites_with_active_keys(session: Session) -> list[tuple[Site, int]]:
    active = (select(ApiKey.site_id, func.count().label("n"))
              .where(ApiKey.revoked_at.is_(None)).group_by(ApiKey.site_id).subquery())
    rows = session.execute(
        select(Site, func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.site_id == Site.id).order_by(Site.name)
    ).all()
    return [(site, int(n)) for site, n in rows]


def all_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.created_at, Site.id)))


def keys_of_site(session: Session, site_id: uuid.UUID) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.site_id == site_id)
                                .order_by(ApiKey.created_at)))
