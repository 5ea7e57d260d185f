"""The dashboard's own read model (prefix `dashboard_`), fed only by events
(`services.dashboard.consumer`): it never reads another service's tables.

Regions are stored with their county and state prefixes (`us/wa/king-county/98104` ->
`us/wa/king-county`, `us/wa`) so the region tree's queries are equality tests.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow


class RegionColumns:
    region_id: Mapped[str] = mapped_column(String(120), index=True)
    region_name: Mapped[str] = mapped_column(String(200))
    county_id: Mapped[str] = mapped_column(String(120), index=True)
    state_id: Mapped[str] = mapped_column(String(60), index=True)


class ProcessedEvent(Base):
    """Every event applied, by id: a redelivered or replayed event changes nothing."""

    __tablename__ = "dashboard_processed_events"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    topic: Mapped[str] = mapped_column(String(120))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Result(RegionColumns, Base):
    """A drug-checking result (`drugcheck.results.v1`)."""

    __tablename__ = "dashboard_results"
    __table_args__ = (Index("ix_dashboard_results_canary_collected", "canary", "collected_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    result_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    site_id: Mapped[uuid.UUID] = mapped_column(index=True)
    sample_id: Mapped[str] = mapped_column(String(128))
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    tested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the event was published (the Kafka record's timestamp): a replay keeps it.
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sold_as_raw: Mapped[str | None] = mapped_column(String(200))
    sold_as_id: Mapped[str | None] = mapped_column(String(80), index=True)
    sold_as_class: Mapped[str | None] = mapped_column(String(40))
    form: Mapped[str | None] = mapped_column(String(40))
    methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{raw, substance_id, status, substance_class, risk, method, confidence, percent}]
    substances: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    strips: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    adverse_reaction: Mapped[bool | None] = mapped_column(Boolean)
    collection_site: Mapped[str | None] = mapped_column(String(200))
    canary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Report(RegionColumns, Base):
    """An overdose report (`overdose.reports.v1`)."""

    __tablename__ = "dashboard_reports"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    site_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    source: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fatal: Mapped[str] = mapped_column(String(8))
    naloxone_doses: Mapped[int | None] = mapped_column(Integer)
    suspected_substance_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    sold_as_id: Mapped[str | None] = mapped_column(String(80))


class Signal(RegionColumns, Base):
    """A detection signal (`signals.v1`): a spike or a contamination pattern."""

    __tablename__ = "dashboard_signals"
    __table_args__ = (Index("ix_dashboard_signals_canary_published", "canary", "published_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # spike / contamination
    pattern: Mapped[str] = mapped_column(String(40))  # "spike" or the contamination pattern
    severity: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    evidence_event_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    substance_id: Mapped[str | None] = mapped_column(String(80))
    substance_name: Mapped[str | None] = mapped_column(String(200))
    sold_as_id: Mapped[str | None] = mapped_column(String(80))
    sold_as_name: Mapped[str | None] = mapped_column(String(200))
    site_count: Mapped[int | None] = mapped_column(Integer)
    sample_count: Mapped[int | None] = mapped_column(Integer)
    identified_by: Mapped[list[str]] = mapped_column(JSON, default=list)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    observed: Mapped[float | None] = mapped_column(Float)
    expected: Mapped[float | None] = mapped_column(Float)
    upperbound: Mapped[float | None] = mapped_column(Float)
    method: Mapped[str | None] = mapped_column(String(40))
    score: Mapped[float | None] = mapped_column(Float)
    canary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Alert(RegionColumns, Base):
    """An alert as its latest `alerts.events.v1` event left it, with the moments the
    timeline needs (first SMS handed over, first delivered), taken from the events."""

    __tablename__ = "dashboard_alerts"

    alert_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    substance_id: Mapped[str | None] = mapped_column(String(80))
    texts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    segments: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    signal_event_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    review_reason: Mapped[str | None] = mapped_column(String(120))
    audience: Mapped[int | None] = mapped_column(Integer)
    deliveries: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by: Mapped[str | None] = mapped_column(String(120))
    # The first officials' or policy decision: approve / reject / cancel, when and who.
    decision: Mapped[str | None] = mapped_column(String(32))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(120))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    first_sms_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the latest event's time
    canary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class AlertEvent(Base):
    """Each alert change: the audit trail and the timeline."""

    __tablename__ = "dashboard_alert_events"

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    alert_id: Mapped[uuid.UUID] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deliveries: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)


class Site(Base):
    """Sites' names (`sites.keys.v1`), for "each site's last submission"."""

    __tablename__ = "dashboard_sites"

    site_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Referral(Base):
    """A referral's latest status (`referrals.events.v1`); no personal data."""

    __tablename__ = "dashboard_referrals"

    referral_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(16))
    region_id: Mapped[str | None] = mapped_column(String(120))
    service_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Every status it reached, for the funnel.
    reached: Mapped[list[str]] = mapped_column(JSON, default=list)


class Change(Base):
    """What changed, in order, for the live stream (`services.dashboard.stream`): the web
    process polls rows after the last id it sent. Old rows are pruned by the worker."""

    __tablename__ = "dashboard_changes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # signal / alert / deliveries / result ...
    ref: Mapped[str] = mapped_column(String(64))  # the signal's event id, the alert's id...
    region_id: Mapped[str | None] = mapped_column(String(120))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    data: Mapped[str] = mapped_column(Text)  # JSON sent as the SSE event's data


# ---- aggregates, kept as events are applied (`services.dashboard.aggregates`) ---------------
# The pages read these instead of every row of a range; real (not canary) traffic only.
# Days are the event time's UTC date.

class Region(Base):
    """Every region with reports or samples, and how many of each: the region tree."""

    __tablename__ = "dashboard_regions"

    region_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    region_name: Mapped[str] = mapped_column(String(200))
    reports: Mapped[int] = mapped_column(Integer, default=0)
    results: Mapped[int] = mapped_column(Integer, default=0)


class ReportDay(Base):
    """Overdose reports per day, region, source and fatal."""

    __tablename__ = "dashboard_report_days"
    __table_args__ = (Index("ix_dashboard_report_days_state_day", "state_id", "day"),
                      Index("ix_dashboard_report_days_county_day", "county_id", "day"))

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    fatal: Mapped[str] = mapped_column(String(8), primary_key=True)
    county_id: Mapped[str] = mapped_column(String(120))
    state_id: Mapped[str] = mapped_column(String(60))
    reports: Mapped[int] = mapped_column(Integer)


class SampleDay(Base):
    """Drug-checking samples per day, region and sold-as ("" when not given): how many,
    how many held what they were sold as, how many held a high-risk substance."""

    __tablename__ = "dashboard_sample_days"
    __table_args__ = (Index("ix_dashboard_sample_days_state_day", "state_id", "day"),
                      Index("ix_dashboard_sample_days_county_day", "county_id", "day"))

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    sold_as_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    county_id: Mapped[str] = mapped_column(String(120))
    state_id: Mapped[str] = mapped_column(String(60))
    samples: Mapped[int] = mapped_column(Integer)
    matched: Mapped[int] = mapped_column(Integer)
    high_risk: Mapped[int] = mapped_column(Integer)


class FoundDay(Base):
    """Samples in which a substance was found, per day, region and sold-as: `name` is the
    catalog name (or the raw name of an unrecognized one), `substance_id` "" for those."""

    __tablename__ = "dashboard_found_days"
    __table_args__ = (Index("ix_dashboard_found_days_state_day", "state_id", "day"),
                      Index("ix_dashboard_found_days_county_day", "county_id", "day"))

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    region_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    sold_as_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    substance_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    high_risk: Mapped[bool] = mapped_column(Boolean)
    county_id: Mapped[str] = mapped_column(String(120))
    state_id: Mapped[str] = mapped_column(String(60))
    samples: Mapped[int] = mapped_column(Integer)
