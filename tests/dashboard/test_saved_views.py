"""Saved views through the dashboard app on a real database: save the trends page's
filters under a name, see it listed, open it, delete it; another account neither sees nor
deletes it; a change without the CSRF token, unknown filter keys, bad values and a URL in
place of filters are refused; every change is in the audit log."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.dashboard.account_models import DashboardAudit, SavedView
from shared.db import session_scope
from shared.settings import Settings
from tests.dashboard.conftest import MakeOfficial, csrf_of, login

FILTERS = "region=us%2Fwa&days=90&bucket=week&source=reports&fatal=yes"


def _views(settings: Settings) -> list[tuple[str, str, str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return [(v.name, v.page, v.query) for v in session.scalars(select(SavedView))]


def _audit(settings: Settings) -> list[tuple[str, str, str, str | None]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return [(a.actor, a.action, a.outcome, a.target) for a in session.scalars(
            select(DashboardAudit).where(DashboardAudit.action.like("view_%"))
            .order_by(DashboardAudit.id))]


def _save(client: TestClient, name: str, query: str, page: str = "trends",
          csrf: str | None = None) -> httpx.Response:
    data = {"page": page, "name": name, "query": query}
    if csrf is not None:
        data["csrf_token"] = csrf
    return client.post("/views", data=data, follow_redirects=False)


def test_save_list_open_delete_and_only_ones_own(client: TestClient, settings: Settings,
                                                 make_official: MakeOfficial) -> None:
    make_official("ana", role="viewer")
    make_official("bo", role="viewer")
    assert login(client, "ana").status_code == 303
    csrf = csrf_of(client)

    # the trends page offers to save its own filters
    page = client.get(f"/trends?{FILTERS}")
    assert page.status_code == 200
    # the filter form sends its empty date fields: no date, not a 422
    assert client.get("/trends?days=28&start=&end=").status_code == 200
    assert client.get("/supply?days=28&start=&end=").status_code == 200
    offered = re.search(r'name="query" value="([^"]*)"', page.text)
    assert offered is not None and html.unescape(offered.group(1)) == FILTERS

    # without the CSRF token (or with a wrong one) nothing is saved
    assert _save(client, "WA weekly fatal", FILTERS).status_code == 403
    assert _save(client, "WA weekly fatal", FILTERS, csrf="forged").status_code == 403
    assert _views(settings) == []

    saved = _save(client, "  WA   weekly fatal ", FILTERS + "&utm=x&next=//evil.example",
                  csrf=csrf)
    assert saved.status_code == 303
    location = saved.headers["location"]
    split = urlsplit(location)
    assert not split.scheme and not split.netloc and split.path == "/trends"
    assert sorted(split.query.split("&")) == sorted(FILTERS.split("&"))
    assert _views(settings) == [("WA weekly fatal", "trends", split.query)]

    # the list (the Saved views page and the trends page) links to the page with the filters
    listing = client.get("/views")
    assert listing.status_code == 200 and "WA weekly fatal" in listing.text
    href = re.search(r'<a href="(/trends\?[^"]+)">WA weekly fatal</a>', listing.text)
    assert href is not None
    opened = client.get(html.unescape(href.group(1)))
    assert opened.status_code == 200
    assert '<option value="week" selected>' in opened.text
    assert '<option value="yes" selected>fatal only' in opened.text
    assert 'name="days" value="90" checked' in opened.text
    assert "WA weekly fatal" in client.get("/trends").text
    assert "WA weekly fatal" not in client.get("/supply").text  # a trends view

    # names are unique per account; filters are checked
    assert _save(client, "WA weekly fatal", "days=7", csrf=csrf).status_code == 409
    assert _save(client, "bad", "days=abc", csrf=csrf).status_code == 422
    assert _save(client, "x" * 61, "days=7", csrf=csrf).status_code == 422
    assert _save(client, "away", "days=7", page="https://evil.example",
                 csrf=csrf).status_code == 422
    assert _save(client, "away", "days=7", page="admin", csrf=csrf).status_code == 422
    map_view = _save(client, "map 7", "days=7&region=us%2Fwa", page="map", csrf=csrf)
    assert map_view.headers["location"] == "/map?days=7"
    view_id = _view_id(settings, "WA weekly fatal")

    # another account sees none of ana's views and cannot delete one
    assert login(client, "bo").status_code == 303
    other_csrf = csrf_of(client)
    assert "WA weekly fatal" not in client.get("/views").text
    assert "WA weekly fatal" not in client.get("/trends").text
    refused = client.post(f"/views/{view_id}/delete", data={"csrf_token": other_csrf},
                          follow_redirects=False)
    assert refused.status_code == 404
    assert len(_views(settings)) == 2
    assert _save(client, "WA weekly fatal", "days=7", csrf=other_csrf).status_code == 303

    # ana deletes hers (CSRF needed)
    assert login(client, "ana").status_code == 303
    csrf = csrf_of(client)
    assert client.post(f"/views/{view_id}/delete", follow_redirects=False).status_code == 403
    deleted = client.post(f"/views/{view_id}/delete", data={"csrf_token": csrf},
                          follow_redirects=False)
    assert deleted.status_code == 303 and deleted.headers["location"] == "/views"
    assert "WA weekly fatal" not in client.get("/views").text
    assert sorted(_views(settings)) == [("WA weekly fatal", "trends", "days=7"),  # bo's
                                        ("map 7", "map", "days=7")]
    assert client.post(f"/views/{view_id}/delete", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 404

    assert _audit(settings) == [
        ("ana", "view_save", "ok", "WA weekly fatal"),
        ("ana", "view_save", "refused", "WA weekly fatal"),
        ("ana", "view_save", "refused", "bad"),
        ("ana", "view_save", "refused", "x" * 60),
        ("ana", "view_save", "refused", "away"),
        ("ana", "view_save", "ok", "map 7"),
        ("bo", "view_delete", "refused", f"view {view_id}"),
        ("bo", "view_save", "ok", "WA weekly fatal"),
        ("ana", "view_delete", "ok", "WA weekly fatal"),
        ("ana", "view_delete", "refused", f"view {view_id}"),
    ]


def _view_id(settings: Settings, name: str) -> int:
    with session_scope(settings.sqlalchemy_url) as session:
        view_id = session.scalar(select(SavedView.id).where(SavedView.name == name))
        assert view_id is not None
        return view_id
