"""Review actions on an alert (approve, edit, reject, cancel, update, all-clear): sent to
the alerts API with the official's signed credential, each audited here."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from services.dashboard import accounts, alerts_client
from services.dashboard.auth import error_page, page
from services.dashboard.security import (
    PageError,
    SignedInOfficial,
    check_csrf,
    client_address,
    redirect,
    safe_next,
)
from shared.web import AppSettings, DbSession

router = APIRouter(tags=["accounts"])

TEXT_FIELD = re.compile(r"^text_([a-z]{2})$")


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
    client = client_address(request)
    official = signed.official
    target = f"alert {alert_id}"
    if not official.has_role("reviewer"):
        accounts.audit(session, official.name, f"alert_{action}", "refused",
                       official_id=signed.account.id, target=target, client=client,
                       reason=f"role {official.role}")
        # Answered, not raised: the audit row above is committed with the request.
        return error_page(request, 403, "Forbidden", f"{official.name} is a "
                          f"{official.role}: only reviewers act on alerts.")
    reason = str(form.get("reason") or "").strip()[:1000] or None
    if action in ("reject", "cancel") and not reason:
        raise PageError(422, "Reason required", f"Say why you {action} this alert.")
    texts = {m.group(1): str(v).strip() for k, v in form.items()
             if (m := TEXT_FIELD.match(k)) and str(v).strip()}
    body: dict[str, Any] = {"reason": reason, "force": form.get("force") in ("1", "on",
                                                                           "true")}
    if action in ("edit", "update", "all-clear") and texts:
        body["texts"] = texts
    try:
        response = await alerts_client.act(settings, official, alert_id, action, body)
    except Exception as exc:  # the alerts service is down or slow
        accounts.audit(session, official.name, f"alert_{action}", "error",
                       official_id=signed.account.id, target=target, client=client,
                       error=exc.__class__.__name__)
        return error_page(request, 502, "Alerts service unavailable",
                          "The action was not taken: try again.")
    ok = response.status_code < 400
    accounts.audit(session, official.name, f"alert_{action}", "ok" if ok else "refused",
                   official_id=signed.account.id, target=target, client=client,
                   status=response.status_code, reason=reason)
    if not ok:
        return error_page(request, response.status_code, "Not done",
                          alerts_client.problem_detail(response))
    result = response.json()
    next_ = form.get("next")
    return redirect(safe_next(str(next_)) if next_ else f"/alerts/{result['id']}/review")
