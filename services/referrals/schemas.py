"""Request and response bodies of the referrals API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.referrals.service import SHAREABLE

Payment = Literal["medicaid", "uninsured", "sliding_fee", "private_insurance"]


class ConsentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shared_fields: list[str] = Field(
        default_factory=lambda: ["service_type", "language"],
        description=f"What the chosen provider may be told; any of {', '.join(SHAREABLE)}.")
    wording: str = Field(min_length=10, max_length=2000, pattern=r"^[^\x00]*$",
                         description="The consent text the person agreed to, as read to them.")


class StaffReferralIn(BaseModel):
    """A referral made by site staff on someone's behalf."""

    model_config = ConfigDict(extra="forbid")

    service_types: list[str] = Field(min_length=1)
    postal_code: str | None = Field(default=None, max_length=10)
    region_id: str | None = Field(default=None, max_length=120)
    language: str = Field(default="en", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?$")
    payment: Payment | None = None
    age: int | None = Field(default=None, ge=0, le=120)
    note: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")
    callback_phone: str | None = Field(default=None, pattern=r"^\+[1-9]\d{7,14}$",
                                       description="E.164; shared only if consented")
    consent: ConsentBody


class OptionOut(BaseModel):
    number: int
    service_id: str
    name: str
    address: str
    phone: str
    distance_km: float | None
    opens_in_minutes: int
    closes_at: str | None
    reasons: list[str]


class ReferralOut(BaseModel):
    id: uuid.UUID
    source: str
    status: str
    service_types: list[str]
    region_id: str | None
    language: str
    created_at: datetime
    options: list[OptionOut]
    chosen_service_id: str | None
    site_id: uuid.UUID | None = Field(
        default=None, description="The site whose staff made it (with the site's API key)")
    history: list[dict[str, Any]] = Field(default_factory=list)
    notices: list[dict[str, Any]] = Field(default_factory=list)


class ChoiceIn(BaseModel):
    option: int = Field(ge=1, le=3)


class StatusIn(BaseModel):
    status: Literal["connected", "declined", "no_response"]


class ServiceUpdateIn(BaseModel):
    """Availability and capacity, set by the provider or an administrator."""

    model_config = ConfigDict(extra="forbid")

    accepting: bool | None = None
    capacity_available: float | None = Field(default=None, ge=0)
    capacity_maximum: float | None = Field(default=None, ge=0)
    notify_channel: Literal["webhook", "email", "sms"] | None = None
    notify_address: str | None = Field(default=None, max_length=500)


class ServiceOut(BaseModel):
    id: str
    name: str
    organization_id: str
    status: str
    service_types: list[str]
    payment_options: list[str]
    accepting: bool
    capacity_available: float | None
    notify_channel: str | None
    # For a webhook: the secret the provider checks our signatures with (docs/referrals.md).
    webhook_secret: str | None = None


class ReferralStatsOut(BaseModel):
    """Counts only: no personal data."""

    total: int
    by_status: dict[str, int]
    by_source: dict[str, int]


class DevSmsOut(BaseModel):
    """A text kept by the dev SMS backend (the number masked)."""

    sid: str
    to: str
    body: str
    segments: int
    created_at: str
