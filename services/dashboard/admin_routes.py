"""The Admin page: officials' accounts (create, disable), the dashboard's audit log and its
CSV export, and one subscriber's data (export, erase) through the alerts API."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import select

from services.dashboard import accounts, alerts_client
from services.dashboard.account_models import DashboardAudit
from services.dashboard.auth import page
from services.dashboard.security import (
    PageError,
    SignedIn,
    check_csrf,
    client_address,
    redirect,
    require_role,
)
from shared.csvexport import safe_cell
from shared.problems import ProblemError
from shared.web import AppSettings, DbSession

router = APIRouter(tags=["accounts"])

Admin = Annotated[SignedIn, require_role("admin")]


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, session: DbSession, signed: Admin) -> HTMLResponse:
    return page(request, "admin.html", accounts=accounts.list_accounts(session), created=None,
                error=None)


@router.post("/admin/accounts", response_class=HTMLResponse)
def admin_create(request: Request, session: DbSession, settings: AppSettings, signed: Admin,
                 name: Annotated[str, Form(max_length=64)],
                 role: Annotated[str, Form()], regions: Annotated[str, Form(max_length=500)],
                 csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
    check_csrf(signed, csrf_token)
    try:
        new = accounts.create(session, settings, name, role, regions)
    except ProblemError as exc:
        return page(request, "admin.html", exc.status, accounts=accounts.list_accounts(session),
                    created=None, error=exc.detail)
    accounts.audit(session, signed.account.name, "account_create", official_id=signed.account.id,
                   target=new.account.name, client=client_address(request), role=role,
                   regions=new.account.regions)
    return page(request, "admin.html", 201, accounts=accounts.list_accounts(session),
                created=new, error=None)


@router.post("/admin/accounts/{name}/disable")
def admin_disable(request: Request, session: DbSession, signed: Admin, name: str,
                  csrf_token: Annotated[str, Form()] = "") -> Response:
    check_csrf(signed, csrf_token)
    if name == signed.account.name:
        raise PageError(409, "Conflict", "You cannot disable your own account.")
    try:
        accounts.disable(session, name)
    except ProblemError as exc:
        raise PageError(exc.status, exc.title, exc.detail) from exc
    accounts.audit(session, signed.account.name, "account_disable",
                   official_id=signed.account.id, target=name, client=client_address(request))
    return redirect("/admin")


AUDIT_COLUMNS = ("at", "actor", "action", "target", "outcome", "client", "detail")


def _audit_rows(session: DbSession, limit: int, actor: str | None) -> list[DashboardAudit]:
    query = select(DashboardAudit).order_by(DashboardAudit.id.desc()).limit(limit)
    if actor:
        query = query.where(DashboardAudit.actor == actor.strip().lower())
    return list(session.scalars(query))


@router.get("/admin/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: DbSession, signed: Admin,
               limit: Annotated[int, Query(ge=1, le=5000)] = 200,
               actor: str | None = None) -> HTMLResponse:
    return page(request, "admin_audit.html", rows=_audit_rows(session, limit, actor),
                actor=actor or "", limit=limit)


@router.get("/admin/audit.csv")
def audit_csv(session: DbSession, signed: Admin,
              limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
              actor: str | None = None) -> StreamingResponse:
    rows = _audit_rows(session, limit, actor)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(AUDIT_COLUMNS)
        for row in rows:  # a typed name such as "=HYPERLINK(...)" must not run as a formula
            writer.writerow([safe_cell(v) for v in (
                row.at.isoformat(), row.actor, row.action, row.target or "", row.outcome,
                row.client or "", "" if row.detail is None else _detail_text(row.detail))])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(lines(), media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="dashboard-audit.csv"'})


def _detail_text(detail: dict[str, Any]) -> str:
    return "; ".join(f"{k}={v}" for k, v in sorted(detail.items()))


@router.get("/admin/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request, signed: Admin) -> HTMLResponse:
    return page(request, "admin_subscribers.html", exported=None, erased=False, error=None)


@router.post("/admin/subscribers", response_class=HTMLResponse)
async def subscribers_action(request: Request, session: DbSession, settings: AppSettings,
                             signed: Admin, phone: Annotated[str, Form(max_length=40)],
                             action: Annotated[str, Form()],
                             csrf_token: Annotated[str, Form()] = "") -> HTMLResponse:
    """Export (decrypts the number: an admin action of this named account, audited here and
    logged by alerts) or erase one subscriber's data, through the alerts API."""
    check_csrf(signed, csrf_token)
    if action not in ("export", "erase"):
        raise PageError(422, "Unknown action", "export or erase")
    call = alerts_client.export_subscriber if action == "export" else \
        alerts_client.erase_subscriber
    response = await call(settings, signed.official, phone)
    ok = response.status_code < 400
    accounts.audit(session, signed.account.name, f"subscriber_{action}",
                   "ok" if ok else "failed", official_id=signed.account.id,
                   target=f"phone ending {phone.strip()[-2:]}", client=client_address(request),
                   status=response.status_code)
    if not ok:
        return page(request, "admin_subscribers.html", response.status_code, exported=None,
                    erased=False, error=alerts_client.problem_detail(response))
    return page(request, "admin_subscribers.html",
                exported=response.json() if action == "export" else None,
                erased=action == "erase", error=None)
