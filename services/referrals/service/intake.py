"""Referrals asked for over HTTP: by site staff on someone's behalf (the staff API) and by
the public on the help page (no login, no name, no phone). Both are matched at once and
the options returned."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from sqlalchemy.orm import Session

from services.referrals import models as m
from services.referrals.geo import centroid, resolve_place
from services.referrals.matching import SERVICE_TYPES
from services.referrals.service.conversation import ConsentIn, create_referral, offer_options
from shared.problems import ProblemError
from shared.regions import Region, RegionNotFoundError, get_region
from shared.settings import Settings

if TYPE_CHECKING:
    from services.referrals.schemas import StaffReferralIn

REQUESTS = Counter("lookout_referrals_requests_total", "Referral requests", ["source"])
WEB_CONSENT = ("Lookout keeps this request for {days:g} days to count how many people asked "
               "for help, then deletes it. Nothing you enter here is sent to a provider: you "
               "contact the place you choose yourself. Do not enter your name.")
LANGUAGES = {"en": "English", "es": "Español", "fr": "Français", "zh": "中文", "vi": "Tiếng Việt"}
PAYMENTS = {"": "Not sure", "medicaid": "Medicaid / public insurance",
            "uninsured": "No insurance", "sliding_fee": "Sliding fee",
            "private_insurance": "Private insurance"}


def region_for(postal_code: str | None, region_id: str | None) -> str:
    """The city-level region staff named, by id or postal code (options are matched by
    distance, so one is required)."""
    if region_id:
        try:
            get_region(region_id)
        except RegionNotFoundError:
            raise ProblemError(422, "Unknown region", region_id) from None
        if centroid(region_id) is None:
            raise ProblemError(422, "Region too coarse",
                               "give a postal code or a city-level region")
        return region_id
    if postal_code:
        place = resolve_place(postal_code)
        if place is None:
            raise ProblemError(422, "Unknown place", f"no region for {postal_code!r}")
        return place.id
    raise ProblemError(422, "Location required",
                       "give postal_code or region_id: options are matched by distance")


def staff_referral(session: Session, settings: Settings, body: StaffReferralIn,
                   site_id: uuid.UUID | None, now: datetime) -> m.Referral:
    """A referral by site staff (`site_id` None: an admin), with its options offered."""
    referral = create_referral(
        session, settings, source="staff", now=now, actor="staff", site_id=site_id,
        consent=ConsentIn(body.consent.shared_fields, body.consent.wording, "staff"),
        service_types=body.service_types, language=body.language,
        region_id=region_for(body.postal_code, body.region_id), payment=body.payment,
        age=body.age, text=body.note, callback_phone=body.callback_phone)
    offer_options(session, settings, referral, now)
    REQUESTS.labels("staff").inc()
    return referral


@dataclass(frozen=True)
class HelpForm:
    """The help page's form, as typed."""

    service_type: str
    place: str
    language: str = "en"
    payment: str = ""
    age: str = ""

    def fields(self) -> dict[str, str]:
        return asdict(self)


class HelpFormError(ValueError):
    """What to tell the person about the form (the page shows it again)."""


def _check(form: HelpForm, consent: str) -> Region:
    region = resolve_place(form.place)
    if consent != "yes":
        raise HelpFormError("Please tick the box to say you read how we use this request.")
    if form.service_type not in SERVICE_TYPES:
        raise HelpFormError("Please choose the kind of help you need.")
    if region is None:
        raise HelpFormError(
            "We don't know that place. Try a ZIP code, or a city like 'Surrey, BC'.")
    if form.payment and form.payment not in PAYMENTS:
        raise HelpFormError("Please choose how you would pay.")
    if form.age and not (form.age.isdigit() and int(form.age) <= 120):
        raise HelpFormError("Age must be a number.")
    return region


def web_referral(session: Session, settings: Settings, form: HelpForm, consent: str,
                 now: datetime) -> tuple[Region, list[dict[str, Any]]]:
    """A request from the help page: its region and the options offered. Raises
    HelpFormError when the form is not right."""
    region = _check(form, consent)
    referral = create_referral(
        session, settings, source="web", now=now, service_types=[form.service_type],
        language=form.language if form.language in LANGUAGES else "en", region_id=region.id,
        payment=form.payment or None, age=int(form.age) if form.age else None,
        consent=ConsentIn([], WEB_CONSENT.format(days=settings.referrals_retention_days),
                          "web"))
    options = offer_options(session, settings, referral, now)
    REQUESTS.labels("web").inc()
    return region, options
