"""Typed v1 events: the only contract between services.

Every event carries `schema_version`, a UUID `event_id`, its event time and the producer's
id. A breaking change makes a new topic version (`.v2`) and a new model here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    producer: str


class DetectedSubstanceV1(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: str
    substance_id: str | None
    status: str
    substance_class: str | None = None
    risk: int | None = None
    method: str = "ftir"
    confidence: float | None = None
    percent: float | None = None


class DrugCheckResultV1(Event):
    """A drug-checking result accepted by ingest (topic `drugcheck.results.v1`, key region)."""

    result_id: uuid.UUID
    site_id: uuid.UUID
    sample_id: str
    collected_at: AwareDatetime
    tested_at: AwareDatetime | None = None
    region_id: str
    region_name: str
    sold_as_raw: str | None = None
    sold_as_id: str | None = None
    sold_as_class: str | None = None
    form: str | None = None
    methods: list[str] = Field(default_factory=list)
    substances: list[DetectedSubstanceV1] = Field(default_factory=list)
    strips: dict[str, str] = Field(default_factory=dict)
    adverse_reaction: bool | None = None
    # A collection site label under the submitting organisation (e.g. "Walk-in").
    collection_site: str | None = None
    # A synthetic result (`lookout smoke`): it raises its own signal every time, teaches the
    # detectors nothing, and its alert goes to test subscribers only.
    canary: bool = False


class OverdoseReportV1(Event):
    """An overdose report accepted by ingest (topic `overdose.reports.v1`, key region)."""

    report_id: uuid.UUID
    source: Literal["ems", "ed", "outreach", "peer", "public_sms", "medical_examiner"]
    occurred_at: AwareDatetime
    region_id: str
    region_name: str
    fatal: Literal["yes", "no", "unknown"] = "unknown"
    naloxone_doses: int | None = None
    suspected_substance_ids: list[str] = Field(default_factory=list)
    sold_as_id: str | None = None
    # Free text of a public SMS report, with phone numbers and e-mail addresses removed.
    note: str | None = None
    # Set by ingest: the submitting site, the raw and normalized names (unrecognized kept).
    site_id: uuid.UUID | None = None
    sold_as_raw: str | None = None
    sold_as_class: str | None = None
    suspected_substances: list[DetectedSubstanceV1] = Field(default_factory=list)


Severity = Literal["info", "warning", "critical"]


class SignalBase(Event):
    region_id: str
    region_name: str
    severity: Severity
    occurred_at: AwareDatetime  # event time of the evidence that raised it
    evidence_event_ids: list[uuid.UUID] = Field(default_factory=list)
    canary: bool = False  # raised by a canary result: for test subscribers only


class ContaminationSignalV1(SignalBase):
    kind: Literal["contamination"] = "contamination"
    pattern: Literal["unexpected_adulterant", "novel_substance", "multi_site_cluster",
                     "rising_positivity"]
    substance_id: str
    substance_name: str
    sold_as_id: str | None = None
    sold_as_name: str | None = None
    site_count: int = 1
    sample_count: int = 1
    # How the triggering result identified the substance (its `DetectedSubstanceV1.method`s,
    # e.g. ["ftir"], ["gc_ms"]); empty when not known. A region's alert policy can require a
    # confirmatory lab method (gc_ms, lc_ms) before auto-approving.
    identified_by: list[str] = Field(default_factory=list)


class SpikeSignalV1(SignalBase):
    kind: Literal["spike"] = "spike"
    window_start: datetime
    window_end: datetime
    observed: float
    expected: float
    upperbound: float
    method: str
    score: float


SignalV1 = Annotated[ContaminationSignalV1 | SpikeSignalV1, Field(discriminator="kind")]
signal_adapter: TypeAdapter[ContaminationSignalV1 | SpikeSignalV1] = TypeAdapter(SignalV1)


class SmsOutboundJobV1(Event):
    """One SMS to hand to the SMS backend (topic `sms.outbound.v1`, key subscriber)."""

    delivery_id: uuid.UUID
    alert_id: uuid.UUID
    subscriber_id: uuid.UUID
    created_at: AwareDatetime


class ReferralRequestedV1(Event):
    """A person asked for help by SMS (TREATMENT / HELP ME / AYUDA); topic
    `referrals.requests.v1`, key contact_ref. `contact_ref` is the alerts contact's opaque id
    (a UUID), never the phone number: reply with `SmsRequestedV1` on `sms.requests.v1`."""

    requested_at: AwareDatetime
    channel: Literal["sms"] = "sms"
    contact_ref: uuid.UUID
    language: str = "en"
    region_id: str | None = None
    raw_text: str | None = None  # the message, phone numbers and e-mails removed


class SmsRequestedV1(Event):
    """Another service asks alerts to text a contact (topic `sms.requests.v1`, key
    contact_ref). Sent once per event_id through the alerts sender; STOP is honoured."""

    contact_ref: uuid.UUID
    body: str
    purpose: str = "referral"
    requested_at: AwareDatetime


class SmsReceivedV1(Event):
    """A reply from a contact that is not an alerts keyword (e.g. 1/2/3, YES/NO in a referral
    conversation); topic `sms.inbound.v1`, key contact_ref."""

    contact_ref: uuid.UUID
    body: str
    received_at: AwareDatetime


class ContactStoppedV1(Event):
    """A contact texted STOP (or another word of `shared.keywords.STOP_WORDS`): nothing more
    is to be texted to it, and whatever is open for it (a referral conversation) ends as
    stopped; topic `contacts.stops.v1`, key contact_ref."""

    contact_ref: uuid.UUID
    stopped_at: AwareDatetime


ReferralStatus = Literal["requested", "options_sent", "chosen", "provider_notified", "connected",
                         "declined", "no_response", "stopped"]


class ReferralEventV1(Event):
    """A referral changed status (topic `referrals.events.v1`, key referral_id), for the
    dashboard. Carries no personal data: no contact_ref, no free text, no phone."""

    referral_id: uuid.UUID
    status: ReferralStatus
    previous_status: ReferralStatus | None = None
    occurred_at: AwareDatetime
    source: Literal["sms", "web", "staff"]
    actor: Literal["person", "provider", "staff", "system"] = "system"
    service_types: list[str] = Field(default_factory=list)
    region_id: str | None = None
    language: str | None = None
    provider_service_id: str | None = None  # HSDS service id of the chosen provider
    option_count: int = 0


class SiteKeyChangedV1(Event):
    """A site's API key was created or revoked (topic `sites.keys.v1`, key key_id), with the
    key's whole state after the change, so a consumer can keep a replica by upsert. Carries
    the key's SHA-256 hash, never the key. Revocation is final: a consumer keeps a key revoked
    whatever older event arrives later."""

    key_id: uuid.UUID
    site_id: uuid.UUID
    site_name: str
    key_hash: str
    scopes: list[str]
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None
    occurred_at: AwareDatetime


AlertStatus = Literal["draft", "approved", "sending", "sent", "rejected", "cancelled",
                      "expired"]


class AlertChangedV1(Event):
    """An alert changed (topic `alerts.events.v1`, key alert_id), for the dashboard: the
    whole alert after the change, so a consumer keeps its copy by upsert (the newest
    `occurred_at` wins). Delivery counts are sent as they move, aggregated: at most one
    event a second per alert, however large the fan-out. Carries no phone or subscriber."""

    alert_id: uuid.UUID
    occurred_at: AwareDatetime
    # create, merge, escalate, merge_approve, approve, edit, reject, cancel, update,
    # all_clear, <kind>_drafted, sending, sent, expired, deliveries, ...
    action: str
    actor: str  # "system", "policy:auto", or the official who acted
    status: str
    kind: str  # alert, update, all_clear, canary
    severity: Severity
    region_id: str
    region_name: str
    substance_id: str | None = None
    texts: dict[str, str] = Field(default_factory=dict)
    segments: dict[str, int] = Field(default_factory=dict)  # per language
    signal_event_ids: list[uuid.UUID] = Field(default_factory=list)
    # Why the alert waits for review (policy: "severity", "not lab-confirmed", "novel
    # substance as sold"); None when approved by policy or not known at this change.
    review_reason: str | None = None
    audience: int | None = None  # subscribers it goes (or would go) to
    deliveries: dict[str, int] = Field(default_factory=dict)  # count by delivery status
    created_at: AwareDatetime
    approved_at: AwareDatetime | None = None
    approved_by: str | None = None
    expires_at: AwareDatetime | None = None
    parent_id: uuid.UUID | None = None
    canary: bool = False  # `lookout smoke`'s test alert
