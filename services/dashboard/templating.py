"""The dashboard's Jinja2 environment: one `templates` for every router (pages, auth, admin),
the filters the pages share, and `render`, which fills the layout's context (the signed-in
official, the CSRF token, the active nav entry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.responses import Response

from services.dashboard import saved_views
from shared.gsm import is_gsm7, segment_count

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

# The nav: (key, path, label); `admin` only for admins (dash-auth's pages).
NAV = (
    ("now", "/", "Now"),
    ("review", "/review", "Review queue"),
    ("trends", "/trends", "Trends"),
    ("supply", "/supply", "Drug supply"),
    ("map", "/map", "Map"),
    ("referrals", "/referrals", "Referrals"),
    ("performance", "/performance", "Performance"),
    ("views", "/views", "Saved views"),
)
ESSENCE = {"red": "p < 0.01", "yellow": "p < 0.05", "blue": "normal", "grey": "no baseline"}


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'4 min ago', '3 h ago', '2 d ago' (a datetime without a zone is UTC)."""
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 90:
        return f"{max(int(seconds), 0)} s ago"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def minutes(delta: timedelta | float | None) -> str:
    """A duration (a timedelta or seconds) as '42 s', '7.5 min', '3.2 h'."""
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["ago"] = ago
templates.env.filters["minutes"] = minutes
templates.env.filters["when"] = when
templates.env.globals["segment_count"] = segment_count
templates.env.globals["is_gsm7"] = is_gsm7
templates.env.globals["NAV"] = NAV
templates.env.globals["ESSENCE"] = ESSENCE
templates.env.globals["view_href"] = saved_views.href
templates.env.globals["view_page_label"] = saved_views.page_label


def _csrf_token(request: Request) -> str:
    signed = getattr(request.state, "signed_in", None)
    return str(signed.csrf_token) if signed is not None else ""


def _csrf_field(request: Request) -> Markup:
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        _csrf_token(request))


templates.env.globals.setdefault("csrf_token", _csrf_token)
templates.env.globals.setdefault("csrf_field", _csrf_field)


def render(request: Request, name: str, context: dict[str, Any], *, active: str = "",
           status_code: int = 200) -> Response:
    """A page in the layout: base.html reads `signed` (who is signed in, put on
    `request.state.signed_in` by the auth dependency) and `active` (the nav entry)."""
    full = {"signed": getattr(request.state, "signed_in", None), "active": active, **context}
    return templates.TemplateResponse(request, name, full, status_code=status_code)
