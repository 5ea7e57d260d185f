"""Request and response bodies of the ingest API."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_FUTURE = timedelta(minutes=5)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE_RE = re.compile(r"\+?\d[\d\s().-]{7,}\d")

Form = Literal["powder", "pill", "crystal", "liquid", "blotter", "capsule", "tar", "rock",
               "plant", "other"]
Method = Literal["ftir", "fentanyl_strip", "benzo_strip", "xylazine_strip", "nitazene_strip",
                 "gc_ms", "lc_ms", "raman", "other"]
StripResult = Literal["positive", "negative", "invalid", "not_tested"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
    strips: dict[str, StripResult] = Field(default_factory=dict, max_length=10)
    adverse_reaction: bool | None = None
    notes: str | None = Field(default=None, max_length=2000)

    _collected = field_validator("collected_at")(not_in_future)

    @field_validator("tested_at")
    @classmethod
    def _tested(cls, value: datetime | None) -> datetime | None:
        return None if value is None else not_in_future(value)

    @field_validator("notes")
    @classmethod
    def _no_contact_details(cls, value: str | None) -> str | None:
        if value and (EMAIL_RE.search(value) or PHONE_RE.search(value)):
            raise ValueError("notes must not contain phone numbers or e-mail addresses")
        return value


class SubmissionOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    status: Literal["accepted", "duplicate"]
    region_id: str


class SiteCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["results", "reports"]] = Field(default=["results", "reports"])


class SiteCreated(BaseModel):
    site_id: uuid.UUID
    name: str
    api_key: str
    scopes: list[str]
