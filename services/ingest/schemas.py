"""Request and response bodies of the ingest API."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_FUTURE = timedelta(minutes=5)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE_RE = re.compile(r"\+?\d[\d\s().-]{7,}\d")

Form = Literal["powder", "pill", "crystal", "liquid", "blotter", "capsule", "tar", "rock",
               "plant", "other"]
Method = Literal["ftir", "fentanyl_strip", "benzo_strip", "xylazine_strip", "nitazene_strip",
                 "gc_ms", "lc_ms", "raman", "other"]
StripResult = Literal["positive", "negative", "invalid", "not_tested"]
# Which strip, e.g. "fentanyl_strip" (CSV imports use the `Method` names).
StripName = Annotated[str, StringConstraints(min_length=1, max_length=40)]


def _nul_locations(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Where a model's own input holds a NUL: its text fields, the text items of its lists,
    the keys and text values of its dicts. (Nested models check their own input.)"""
    found: list[tuple[str | int, ...]] = []
    for name, value in data.items():
        if isinstance(value, str):
            if "\x00" in value:
                found.append((name,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str) and "\x00" in item:
                    found.append((name, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in str(key) or (isinstance(item, str) and "\x00" in item):
                    found.append((name, str(key)))
    return found


# Validation context key: True when the caller has checked the whole input holds no NUL
# (the API, from the body's bytes), so the models need not look field by field.
NUL_FREE = "nul_free"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any, info: ValidationInfo) -> Any:
        """NUL is never meaningful here, and PostgreSQL text cannot hold it. One check per
        model, not per field (a field validator on every field cost a third of a result's
        validation); the errors still name each field."""
        if info.context and info.context.get(NUL_FREE):
            return data
        if isinstance(data, dict) and (where := _nul_locations(data)):
            raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                type=PydanticCustomError("value_error", "must not contain NUL characters"),
                loc=loc, input=None) for loc in where])
        return data


def not_in_future(value: datetime) -> datetime:
    if value - datetime.now(UTC) > MAX_FUTURE:
        raise ValueError("must not be more than 5 minutes in the future")
    return value


class Location(Strict):
    """Where the sample was collected: a postal code, a city and state, or a point.

    A point is resolved to its region at once; the coordinates are never stored.
    """

    postal_code: str | None = Field(default=None, max_length=12)
    city: str | None = Field(default=None, max_length=100)
    state: str | None = Field(default=None, max_length=50)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="after")
    def _one_way(self) -> Location:
        if not (self.postal_code or (self.city and self.state)
                or (self.lat is not None and self.lon is not None)):
            raise ValueError("give postal_code, or city and state, or lat and lon")
        return self


class SubstanceIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    method: Method = "ftir"
    confidence: float | None = Field(default=None, ge=0, le=1)
    percent: float | None = Field(default=None, ge=0, le=100)


class DrugCheckIn(Strict):
    sample_id: str = Field(min_length=1, max_length=128)
    collected_at: AwareDatetime
    tested_at: AwareDatetime | None = None
    location: Location
    sold_as: str | None = Field(default=None, max_length=200)
    form: Form | None = None
    methods: list[Method] = Field(default_factory=list, max_length=10)
    substances: list[SubstanceIn] = Field(default_factory=list, max_length=50)
    strips: dict[StripName, StripResult] = Field(default_factory=dict, max_length=10)
    adverse_reaction: bool | None = None
    notes: str | None = Field(default=None, max_length=2000)
    collection_site: str | None = Field(default=None, max_length=120)
    # A synthetic test result (`lookout smoke`): detection raises its own signal for it and
    # learns nothing from it; its alert goes to test subscribers only.
    canary: bool = False

    _collected = field_validator("collected_at")(not_in_future)

    @field_validator("tested_at")
    @classmethod
    def _tested(cls, value: datetime | None) -> datetime | None:
        return None if value is None else not_in_future(value)

    # A site's free text: never phone numbers or e-mail addresses (no one's contact details
    # are kept, and no one's text is passed on to be called or written to).
    @field_validator("notes", "sold_as", "collection_site")
    @classmethod
    def _no_contact_details(cls, value: str | None) -> str | None:
        return no_contact_details(value)


def no_contact_details(value: str | None) -> str | None:
    if value and (EMAIL_RE.search(value) or PHONE_RE.search(value)):
        raise ValueError("must not contain phone numbers or e-mail addresses")
    return value


MAX_BATCH = 1000
Source = Literal["ems", "ed", "outreach", "peer", "public_sms", "medical_examiner"]


class OverdoseReportIn(Strict):
    """One overdose. No names: unknown fields (name, address, phone...) are refused."""

    source: Source
    occurred_at: AwareDatetime
    location: Location
    fatal: Literal["yes", "no", "unknown"] = "unknown"
    naloxone_doses: int | None = Field(default=None, ge=0, le=50)
    suspected_substances: list[str] = Field(default_factory=list, max_length=20)
    sold_as: str | None = Field(default=None, max_length=200)

    _occurred = field_validator("occurred_at")(not_in_future)
    _sold_as = field_validator("sold_as")(no_contact_details)

    @field_validator("suspected_substances")
    @classmethod
    def _names_bounded(cls, value: list[str]) -> list[str]:
        value = [v.strip() for v in value]
        if any(not v or len(v) > 200 for v in value):
            raise ValueError("each suspected substance must be 1 to 200 characters")
        return value


class ItemError(BaseModel):
    field: str
    message: str
    type: str


class BatchItemOut(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    id: uuid.UUID | None = None
    event_id: uuid.UUID | None = None
    region_id: str | None = None
    reason: str | None = None  # for rejected: validation, location, conflict
    errors: list[ItemError] = Field(default_factory=list)
    existing_id: uuid.UUID | None = None


class BatchOut(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    items: list[BatchItemOut]


class CsvRejectedRow(BaseModel):
    line: int
    reason: str
    errors: list[ItemError] = Field(default_factory=list)


class CsvImportOut(BaseModel):
    format: Literal["drugcheckingbc", "generic"]
    rows: int
    accepted: int
    duplicate: int
    rejected: int
    rejected_rows: list[CsvRejectedRow]


class SubmissionItem(BaseModel):
    kind: Literal["drug_check", "overdose_report"]
    id: uuid.UUID
    received_at: datetime
    region_id: str
    event: dict[str, Any]


class SubmissionsPage(BaseModel):
    items: list[SubmissionItem]
    next_since: str | None = Field(
        description="Pass as `since` to get the next page; null when this page is the last.")


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    site_id: uuid.UUID
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreate(Strict):
    scopes: list[Literal["results", "reports", "referrals"]] = Field(
        default=["results", "reports"], min_length=1)


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once; only its hash is stored.")


class SiteOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    active_keys: int


class SubmissionOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    status: Literal["accepted", "duplicate"]
    region_id: str


class SiteCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["results", "reports", "referrals"]] = Field(
        default=["results", "reports"])


class SiteCreated(BaseModel):
    site_id: uuid.UUID
    name: str
    api_key: str
    scopes: list[str]
