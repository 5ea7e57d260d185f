"""Saved views: the list page and the forms that save and delete one (the logic is in
`saved_views`). Every change needs the session's CSRF token and is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from services.dashboard import accounts, saved_views
from services.dashboard.auth import error_page
from services.dashboard.security import (
    SignedIn,
    SignedInOfficial,
    check_csrf,
    client_address,
    redirect,
    safe_next,
)
from services.dashboard.templating import render
from shared.problems import ProblemError
from shared.web import DbSession

router = APIRouter(tags=["saved views"])


def _audit(session: DbSession, request: Request, signed: SignedIn, action: str,
           outcome: str, target: str, **detail: Any) -> None:
    accounts.audit(session, signed.account.name, action, outcome,
                   official_id=signed.account.id, target=target,
                   client=client_address(request), **detail)


@router.get("/views", include_in_schema=False)
def views_page(request: Request, session: DbSession, signed: SignedInOfficial) -> Response:
    views = saved_views.list_views(session, signed.account.id)
    return render(request, "pages/views.html", {"views": views}, active="views")


@router.post("/views", include_in_schema=False)
def save_view(request: Request, session: DbSession, signed: SignedInOfficial,
              page: Annotated[str, Form(max_length=16)],
              name: Annotated[str, Form(max_length=200)],
              query: Annotated[str, Form(max_length=2000)] = "",
              csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(signed, csrf_token)
    try:
        view = saved_views.save(session, signed.account.id, page, name, query)
    except ProblemError as exc:  # answered, not raised: the audit row is committed
        _audit(session, request, signed, "view_save", "refused", name[:60], reason=exc.title)
        return error_page(request, exc.status, exc.title, exc.detail)
    _audit(session, request, signed, "view_save", "ok", view.name, page=view.page,
           query=view.query)
    return redirect(saved_views.href(view))


@router.post("/views/{view_id}/delete", include_in_schema=False)
def delete_view(request: Request, session: DbSession, signed: SignedInOfficial,
                view_id: int, csrf_token: Annotated[str, Form()] = "",
                next: Annotated[str, Form()] = "/views") -> Response:
    check_csrf(signed, csrf_token)
    try:
        view = saved_views.delete(session, signed.account.id, view_id)
    except ProblemError as exc:
        _audit(session, request, signed, "view_delete", "refused", f"view {view_id}",
               reason=exc.title)
        return error_page(request, exc.status, exc.title, exc.detail)
    _audit(session, request, signed, "view_delete", "ok", view.name, page=view.page,
           query=view.query)
    return redirect(safe_next(next))
