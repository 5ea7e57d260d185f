"""The alerts API's request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer

# Times as `datetime.isoformat()` writes them (the API's JSON has always used that form).
IsoTime = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class ActionIn(BaseModel):
    """A review action. Who acts is the official of the signed credential (never a field
    or header of the request); `reason` is kept in the audit."""

    force: bool = False
    reason: str | None = Field(default=None, max_length=1000)


class EditIn(ActionIn):
    texts: dict[str, str] = Field(default_factory=dict)
    expires_at: AwareDatetime | None = None


class FollowUpIn(ActionIn):
    texts: dict[str, str] | None = None


class DeliveryOut(BaseModel):
    id: uuid.UUID
    alert_id: uuid.UUID
    status: str
    body: str
    segments: int
    backend: str | None
    provider_sid: str | None
    error_code: str | None
    created_at: IsoTime
    handed_at: IsoTime | None


class AlertOut(BaseModel):
    id: uuid.UUID
    kind: str
    parent_id: uuid.UUID | None
    region_id: str
    region_name: str
    substance_id: str | None
    severity: str
    status: str
    body: str
    texts: dict[str, str]
    segments: dict[str, int]
    max_segments: int
    signal_count: int
    created_at: IsoTime
    approved_at: IsoTime | None
    approved_by: str | None
    expires_at: IsoTime | None


class AlertReviewOut(AlertOut):
    """An alert with its review state: whether a second reviewer is needed, who wrote the
    text, who approved it first."""

    second_reviewer: bool
    text_author: str | None
    first_approvals: list[str]


class AuditEntryOut(BaseModel):
    at: IsoTime
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AlertDetailOut(AlertReviewOut):
    deliveries: dict[str, int]
    audit: list[AuditEntryOut]


class ConsentOut(BaseModel):
    at: IsoTime | None
    channel: str | None
    wording: str | None


class MessageOut(BaseModel):
    id: uuid.UUID
    purpose: str
    status: str
    body: str
    created_at: IsoTime


class SubscriberExport(BaseModel):
    """Everything held about one subscriber (the only place the number is shown)."""

    id: uuid.UUID
    phone: str
    status: str
    language: str
    areas: list[str]
    consent: ConsentOut
    created_at: IsoTime
    stopped_at: IsoTime | None
    messages: list[MessageOut]


class OutboxMessageOut(BaseModel):
    sid: str
    to: str
    body: str
    segments: int
    created_at: IsoTime
