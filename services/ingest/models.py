"""Tables owned by ingest (prefix `ingest_`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow
from shared.ids import uuid7
from shared.outbox import OutboxMixin


class Site(Base):
    __tablename__ = "ingest_sites"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "ingest_api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingest_sites.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DrugCheck(Base):
    __tablename__ = "ingest_drug_checks"
    __table_args__ = (
        UniqueConstraint("site_id", "sample_id"),
        Index("ix_ingest_drug_checks_site_received", "site_id", "received_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingest_sites.id"))
    sample_id: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    region_id: Mapped[str] = mapped_column(String(120), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)  # the normalized v1 event as sent


class OverdoseReport(Base):
    """An overdose report; `idempotency_key` (per site) comes from the Idempotency-Key header."""

    __tablename__ = "ingest_overdose_reports"
    __table_args__ = (
        UniqueConstraint("site_id", "idempotency_key"),
        Index("ix_ingest_overdose_reports_site_received", "site_id", "received_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    event_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ingest_sites.id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(160))
    content_hash: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    region_id: Mapped[str] = mapped_column(String(120), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[dict[str, Any]] = mapped_column(JSON)


class OutboxMessage(OutboxMixin, Base):
    """Transactional outbox: written with the submission, published by the relay."""

    __tablename__ = "ingest_outbox"
