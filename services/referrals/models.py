"""Tables owned by referrals (prefix `referrals_`).

The provider directory keeps the Open Referral HSDS 3.0 shape (ids are the publisher's
strings; field names as in HSDS). Service types and payment options are derived on import
from HSDS attributes/taxonomy terms and kept on the service row for fast matching.

Referrals hold personal data only in `contact_ref`, `text`, `callback_phone_encrypted` and
the provider notices' payload; the purge clears those and keeps the rest for aggregates.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow
from shared.outbox import OutboxMixin
from shared.sms import DevOutboxMixin

HSDS_ID = String(64)


class Organization(Base):
    __tablename__ = "referrals_organizations"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(200))
    website: Mapped[str | None] = mapped_column(String(500))


class Service(Base):
    __tablename__ = "referrals_services"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("referrals_organizations.id"),
                                                 index=True)
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(500))
    email: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default="active")
    interpretation_services: Mapped[str | None] = mapped_column(Text)
    fees_description: Mapped[str | None] = mapped_column(Text)
    eligibility_description: Mapped[str | None] = mapped_column(Text)
    minimum_age: Mapped[int | None] = mapped_column(Integer)
    maximum_age: Mapped[int | None] = mapped_column(Integer)
    # Derived from HSDS attributes (taxonomy terms): our service types and payment options.
    service_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    payment_options: Mapped[list[str]] = mapped_column(JSON, default=list)
    # HSDS attributes as imported ({"taxonomy", "code", "name", "value"}), for export.
    attributes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Availability set through the admin API (False: not taking referrals right now).
    accepting: Mapped[bool] = mapped_column(default=True)
    # Where hand-off notices go: webhook | email | sms (an E.164 number: business contact
    # data of the provider, not personal data) | None (staff read them on the page).
    notify_channel: Mapped[str | None] = mapped_column(String(16))
    notify_address: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Location(Base):
    __tablename__ = "referrals_locations"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    organization_id: Mapped[str | None] = mapped_column(
        ForeignKey("referrals_organizations.id"), index=True)
    location_type: Mapped[str] = mapped_column(String(16), default="physical")
    name: Mapped[str | None] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    transportation: Mapped[str | None] = mapped_column(Text)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    # The location's public address (HSDS `address`, the physical one), flattened.
    address_1: Mapped[str | None] = mapped_column(String(300))
    city: Mapped[str | None] = mapped_column(String(120))
    state_province: Mapped[str | None] = mapped_column(String(60))
    postal_code: Mapped[str | None] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(String(2))
    # Resolved on import from the postal code (or city): time zone and distance fallbacks.
    region_id: Mapped[str | None] = mapped_column(String(120), index=True)


class ServiceAtLocation(Base):
    __tablename__ = "referrals_service_at_location"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("referrals_services.id"), index=True)
    location_id: Mapped[str] = mapped_column(ForeignKey("referrals_locations.id"), index=True)
    description: Mapped[str | None] = mapped_column(Text)


class Phone(Base):
    __tablename__ = "referrals_phones"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    location_id: Mapped[str | None] = mapped_column(String(64))
    organization_id: Mapped[str | None] = mapped_column(String(64))
    service_at_location_id: Mapped[str | None] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(40))
    extension: Mapped[str | None] = mapped_column(String(10))
    type: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)


class Schedule(Base):
    __tablename__ = "referrals_schedules"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    location_id: Mapped[str | None] = mapped_column(String(64))
    service_at_location_id: Mapped[str | None] = mapped_column(String(64))
    freq: Mapped[str | None] = mapped_column(String(16))
    byday: Mapped[str | None] = mapped_column(String(60))
    opens_at: Mapped[str | None] = mapped_column(String(16))  # "HH:MM", optional offset
    closes_at: Mapped[str | None] = mapped_column(String(16))
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)


class Language(Base):
    __tablename__ = "referrals_languages"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    location_id: Mapped[str | None] = mapped_column(String(64))
    phone_id: Mapped[str | None] = mapped_column(String(64))  # a language a phone line speaks
    name: Mapped[str | None] = mapped_column(String(80))
    code: Mapped[str | None] = mapped_column(String(8))


class ServiceArea(Base):
    __tablename__ = "referrals_service_areas"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str | None] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)


class ServiceCapacity(Base):
    __tablename__ = "referrals_service_capacity"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64), index=True)
    unit: Mapped[str | None] = mapped_column(String(80))  # HSDS unit name (e.g. "bed")
    available: Mapped[float] = mapped_column(Float)
    maximum: Mapped[float | None] = mapped_column(Float)
    description: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CostOption(Base):
    __tablename__ = "referrals_cost_options"

    id: Mapped[str] = mapped_column(HSDS_ID, primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64), index=True)
    option: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[float | None] = mapped_column(Float)
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_description: Mapped[str | None] = mapped_column(Text)


class Referral(Base):
    """One person's request for help and its hand-off."""

    __tablename__ = "referrals_referrals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    source: Mapped[str] = mapped_column(String(8))  # sms | web | staff
    # The site whose staff made a staff referral with the site's API key (None: admin token).
    site_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    request_event_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    contact_ref: Mapped[uuid.UUID | None] = mapped_column(index=True)  # personal
    status: Mapped[str] = mapped_column(String(20), index=True)
    # What the conversation waits for: location | choice | handoff (until the follow-up)
    # | followup | None (closed).
    awaiting: Mapped[str | None] = mapped_column(String(12))
    service_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    language: Mapped[str] = mapped_column(String(8), default="en")
    region_id: Mapped[str | None] = mapped_column(String(120))
    payment: Mapped[str | None] = mapped_column(String(16))
    age: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)  # personal: the person's own words
    callback_phone_encrypted: Mapped[str | None] = mapped_column(Text)  # personal
    # Offered options: [{"service_id", "service_at_location_id", "name", "distance_km", ...}]
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    chosen_service_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    options_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a worker took the provider notice to send it (service.claim_notice): one sender
    # at a time; a claim gone stale (its sender died) may be taken again.
    notice_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    followup_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Consent(Base):
    """What the person agreed to share, with whom, and for how long."""

    __tablename__ = "referrals_consents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    referral_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("referrals_referrals.id"),
                                                   unique=True)
    shared_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    shared_with: Mapped[str] = mapped_column(String(200))
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime)
    wording: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(8))
    given_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusChange(Base):
    """Every status a referral went through (kept after the purge, for aggregates)."""

    __tablename__ = "referrals_status_changes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    referral_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("referrals_referrals.id"),
                                                   index=True)
    status: Mapped[str] = mapped_column(String(20))
    previous_status: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderNotice(Base):
    """A hand-off notice sent (or attempted) to a provider; the payload is personal."""

    __tablename__ = "referrals_provider_notices"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    referral_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("referrals_referrals.id"),
                                                   index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # sent | failed | manual
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessedEvent(Base):
    """Events already handled (consumers are idempotent on event_id)."""

    __tablename__ = "referrals_processed_events"
    __table_args__ = (UniqueConstraint("event_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID]
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SiteKey(Base):
    """Replica of the site API keys that carry a scope of ours, kept from ingest's
    `sites.keys.v1` events (services never read each other's tables). Only the hash."""

    __tablename__ = "referrals_site_keys"

    key_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site_id: Mapped[uuid.UUID] = mapped_column(index=True)
    site_name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DevSmsMessage(DevOutboxMixin, Base):
    """The dev SMS backend's texts to providers (`LOOKOUT_SMS_BACKEND=outbox`)."""

    __tablename__ = "referrals_dev_outbox"


class OutboxMessage(OutboxMixin, Base):
    """Transactional outbox: SMS requests and referral events, published by the relay."""

    __tablename__ = "referrals_outbox"
