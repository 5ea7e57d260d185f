"""Tables owned by alerts (prefix `alerts_`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow


class Subscriber(Base):
    """A phone that asked for warnings. The number is stored encrypted and found by hash."""

    __tablename__ = "alerts_subscribers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    phone_encrypted: Mapped[str] = mapped_column(Text)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    language: Mapped[str] = mapped_column(String(5), default="en")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending/active/stopped
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_channel: Mapped[str | None] = mapped_column(String(16))
    consent_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Subscription(Base):
    __tablename__ = "alerts_subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "region_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscriber_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_subscribers.id"))
    region_id: Mapped[str] = mapped_column(String(120), index=True)


class Alert(Base):
    __tablename__ = "alerts_alerts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    region_id: Mapped[str] = mapped_column(String(120), index=True)
    region_name: Mapped[str] = mapped_column(String(200))
    substance_id: Mapped[str | None] = mapped_column(String(80))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # draft/approved/sending/sent/cancelled/expired
    body_en: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(120))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertSource(Base):
    """Which signal (and which evidence events) an alert was built from; one row per pair."""

    __tablename__ = "alerts_alert_sources"
    __table_args__ = (UniqueConstraint("signal_event_id", "evidence_event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_alerts.id"), index=True)
    signal_event_id: Mapped[uuid.UUID] = mapped_column(index=True)
    evidence_event_id: Mapped[uuid.UUID] = mapped_column(index=True)


class Delivery(Base):
    """One SMS of one alert to one subscriber: the unique key that prevents double sends."""

    __tablename__ = "alerts_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "subscriber_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_alerts.id"), index=True)
    subscriber_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_subscribers.id"))
    # pending -> sending -> queued (handed to the backend) -> sent -> delivered;
    # or skipped (stopped before send), undelivered, failed.
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str | None] = mapped_column(String(16))
    provider_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    error_code: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    handed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DevOutboxMessage(Base):
    """The dev SMS backend: what would have been texted, shown on /dev/outbox."""

    __tablename__ = "alerts_dev_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    to_encrypted: Mapped[str] = mapped_column(Text)
    to_masked: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
