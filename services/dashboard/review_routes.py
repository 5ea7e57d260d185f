"""Review actions on an alert (approve, edit, reject, cancel, update, all-clear): the page
and the form posts, which `review` sends to the alerts API with the official's signed
credential, each audited."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.dashboard import alerts_client, review
from services.dashboard.auth import error_page, page
from services.dashboard.security import (
    PageError,
    SignedInOfficial,
    check_csrf,
    client_address,
    redirect,
    safe_next,
)
from shared.problems import ProblemError
from shared.web import AppSettings, DbSession

router = APIRouter(tags=["accounts"])


@router.get("/alerts/{alert_id}/review", response_class=HTMLResponse)
async def review_page(request: Request, settings: AppSettings, signed: SignedInOfficial,
                      alert_id: uuid.UUID) -> HTMLResponse:
    """The alert as the alerts service has it, with the review actions (the workbench page
    includes the same `review_actions.html`)."""
    response = await alerts_client.alert(settings, signed.official, alert_id)
    if response.status_code >= 400:
        raise PageError(response.status_code, "Alert unavailable",
                        alerts_client.problem_detail(response))
    return page(request, "review.html", alert=response.json())


@router.post("/alerts/{alert_id}/{action}", response_class=HTMLResponse)
async def review_action(request: Request, session: DbSession, settings: AppSettings,
                        signed: SignedInOfficial, alert_id: uuid.UUID,
                        action: str) -> Response:
    """approve | edit | reject | cancel | update | all-clear, with the form's `csrf_token`,
    `reason` (required to reject), `text_<lang>` texts and `force`. The alerts service
    checks the credential, the role and the regions again; its refusals are shown."""
    if action not in alerts_client.ACTIONS:
        raise PageError(404, "Not found", f"No review action {action!r}.")
    form = await request.form()
    check_csrf(signed, str(form.get("csrf_token") or ""))
    try:
        alert = await review.act(session, settings, signed, alert_id, action, form,
                                 client_address(request))
    except ProblemError as exc:  # answered, not raised: the audit row is committed
        return error_page(request, exc.status, exc.title, exc.detail)
    next_ = form.get("next")
    return redirect(safe_next(str(next_)) if next_ else f"/alerts/{alert['id']}/review")
