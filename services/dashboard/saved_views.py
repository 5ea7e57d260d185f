"""Saved views (as ESSENCE has them): an official names the filters of the trends, drug
supply or map page and opens them again from a list. A view stores the page's key and its
query string, cut down to that page's filter keys with each value checked, never a URL:
the link is always the page's own path plus that query (no open redirect).

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.dashboard.account_models import SavedView
from shared.db import utcnow
from shared.problems import ProblemError

MAX_NAME = 60
MAX_QUERY = 500
MAX_VIEWS = 100  # per account

_REGION = re.compile(r"[a-z0-9][a-z0-9/_.-]{0,119}")
_DAYS = re.compile(r"[1-9][0-9]{0,3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BUCKET = re.compile(r"day|week")
# What each page's filters accept (the page itself checks them again when opened).
_RANGE = {"region": _REGION, "days": _DAYS, "start": _DATE, "end": _DATE, "bucket": _BUCKET}
PAGES: dict[str, tuple[str, str, dict[str, re.Pattern[str]]]] = {
    "trends": ("/trends", "Trends", {**_RANGE, "source": re.compile(r"reports|results"),
                                     "report_source": re.compile(r"[a-z_]{1,40}"),
                                     "fatal": re.compile(r"yes|no")}),
    "supply": ("/supply", "Drug supply", _RANGE),
    "map": ("/map", "Map", {"days": _DAYS}),
}


def clean_query(page: str, query: str) -> str:
    """The page's filters from `query` (a query string, with or without its '?'): unknown
    keys and empty values dropped, one value per key, each checked; 422 otherwise."""
    if page not in PAGES:
        raise ProblemError(422, "Unknown page", f"Views are saved for: {', '.join(PAGES)}.",
                           field="page")
    if len(query) > MAX_QUERY:
        raise ProblemError(422, "Filters too long", f"At most {MAX_QUERY} characters.",
                           field="query")
    allowed = PAGES[page][2]
    kept: dict[str, str] = {}
    for key, value in parse_qsl(query.removeprefix("?"), keep_blank_values=False):
        pattern = allowed.get(key)
        if pattern is None or key in kept:
            continue
        if not pattern.fullmatch(value):
            raise ProblemError(422, "Invalid filter", f"Not a valid {key}: {value[:40]!r}.",
                               field="query")
        kept[key] = value
    return urlencode(sorted(kept.items()))


def clean_name(name: str) -> str:
    name = " ".join(name.split())  # no control characters, no runs of spaces
    if not name or len(name) > MAX_NAME:
        raise ProblemError(422, "Invalid name", f"A name of 1-{MAX_NAME} characters.",
                           field="name")
    return name


def href(view: SavedView) -> str:
    path = PAGES[view.page][0]
    return f"{path}?{view.query}" if view.query else path


def page_label(view: SavedView) -> str:
    return PAGES[view.page][1]


def save(session: Session, official_id: uuid.UUID, page: str, name: str,
         query: str) -> SavedView:
    """A new view of this account (409 if the name is taken, 422 for bad filters)."""
    name = clean_name(name)
    query = clean_query(page, query)
    if session.scalar(select(SavedView.id).where(SavedView.official_id == official_id,
                                                 SavedView.name == name)):
        raise ProblemError(409, "Name taken", f"You already have a view named {name!r}.",
                           field="name")
    count = session.scalar(select(func.count()).select_from(SavedView).where(
        SavedView.official_id == official_id)) or 0
    if count >= MAX_VIEWS:
        raise ProblemError(409, "Too many views", f"At most {MAX_VIEWS}: delete one first.")
    view = SavedView(official_id=official_id, page=page, name=name, query=query,
                     created_at=utcnow())
    session.add(view)
    session.flush()
    return view


def list_views(session: Session, official_id: uuid.UUID,
               page: str | None = None) -> list[SavedView]:
    """This account's views (of one page, if given), by name."""
    query = select(SavedView).where(SavedView.official_id == official_id)
    if page is not None:
        query = query.where(SavedView.page == page)
    return list(session.scalars(query.order_by(SavedView.name)))


def delete(session: Session, official_id: uuid.UUID, view_id: int) -> SavedView:
    """Delete one of this account's views; another account's is not found (404)."""
    view = session.get(SavedView, view_id)
    if view is None or view.official_id != official_id:
        raise ProblemError(404, "Not found", "No such saved view of yours.")
    session.delete(view)
    return view
