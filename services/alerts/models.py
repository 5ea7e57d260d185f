"""Tables owned by alerts (prefix `alerts_`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow
from shared.ids import uuid7
from shared.outbox import OutboxMixin
from shared.ratelimit import WindowCounterMixin
from shared.sms import DevOutboxMixin


class Subscriber(Base):
    """A contact: a phone that asked for warnings or texted us (TREATMENT, OD...).

    One table for every contact: `status` is the alert subscription's state (pending, active,
    stopped, invalid, contact = texted us but never joined, erased). STOP applies to every
    message we send, alerts or referral texts. The number is stored encrypted and found by
    keyed hash; `id` is the opaque `contact_ref` other services see.
    """

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
    # Double opt-in by web: a keyed hash of the 6-digit code, its expiry and the attempts.
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Until when replies that are not keywords go to referrals (sms.inbound.v1).
    conversation_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A test phone (operators, the demo subscriber): the only recipients of canary alerts.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SignupRequest(Base):
    """A web signup waiting for its code. What it asks for (an area, a language) is applied to
    the contact only when the code confirms it; its id, not the contact's, is what the page
    holds, so the page is the same whether or not the number is known. A number that must
    not be texted (stopped, invalid) gets a request too, but no code: nothing confirms it."""

    __tablename__ = "alerts_signup_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    phone_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone_encrypted: Mapped[str] = mapped_column(Text)
    region_id: Mapped[str] = mapped_column(String(120))
    language: Mapped[str] = mapped_column(String(5))
    code_hash: Mapped[str | None] = mapped_column(String(64))  # None: burnt or used
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RateWindow(WindowCounterMixin, Base):
    """Counts per time window (signup codes per client and in all, `shared.ratelimit`)."""

    __tablename__ = "alerts_rate_windows"


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
    segments: Mapped[int] = mapped_column(Integer)  # the most of any language's text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(120))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Text per language ({"en": ..., "es": ..., "fr": ...}); body_en mirrors texts["en"].
    texts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    kind: Mapped[str] = mapped_column(String(16), default="alert")  # alert/update/all_clear
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("alerts_alerts.id"))
    signal_count: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertAudit(Base):
    """Every change to an alert: who, when, what, and the alert before and after."""

    __tablename__ = "alerts_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_alerts.id"), index=True)
    actor: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AlertSource(Base):
    """Which signal (and which evidence events) an alert was built from; one row per pair."""

    __tablename__ = "alerts_alert_sources"
    __table_args__ = (UniqueConstraint("signal_event_id", "evidence_event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_alerts.id"), index=True)
    signal_event_id: Mapped[uuid.UUID] = mapped_column(index=True)
    evidence_event_id: Mapped[uuid.UUID] = mapped_column(index=True)


class Delivery(Base):
    """One SMS to one contact: of an alert (unique alert, subscriber) or asked for by another
    service (unique request_id = the SmsRequestedV1 event id). The unique key is what
    prevents double sends."""

    __tablename__ = "alerts_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "subscriber_id"),
        # An alert's pending pages and "anything still pending?" as range reads.
        Index("ix_alerts_deliveries_alert_status_id", "alert_id", "status", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid7)
    alert_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("alerts_alerts.id"),
                                                       index=True)
    request_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    purpose: Mapped[str] = mapped_column(String(32), default="alert")
    # Indexed for a contact's export and erasure (the unique key leads with alert_id).
    subscriber_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts_subscribers.id"),
                                                     index=True)
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


class EarlyStatus(Base):
    """A status callback for a message SID no delivery holds yet: the provider can call back
    before the sender has recorded what it handed over. Applied (and deleted) by the worker
    once the SID is recorded."""

    __tablename__ = "alerts_sms_status_early"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InboundMessage(Base):
    """The MessageSid of every inbound SMS handled (Twilio retries a webhook, and a signed one
    can be replayed): a second delivery of one SID changes nothing. Kept
    `inbound.SEEN_FOR` (30 days)."""

    __tablename__ = "alerts_inbound_messages"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class UsedCredential(Base):
    """Review credentials already used, by `jti`: a credential acts once (a captured one
    replayed within its lifetime is refused). Rows past their expiry are pruned."""

    __tablename__ = "alerts_used_credentials"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class DevOutboxMessage(DevOutboxMixin, Base):
    """The dev SMS backend: what would have been texted, shown on /dev/outbox."""

    __tablename__ = "alerts_dev_outbox"


class OutboxMessage(OutboxMixin, Base):
    """Events alerts publishes (overdose reports, referral requests, inbound replies)."""

    __tablename__ = "alerts_outbox"
