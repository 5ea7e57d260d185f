"""Review actions on an alert (approve, edit, reject, cancel, update, all-clear) as the
dashboard takes them: the request body from the form, the call to the alerts API with the
official's signed credential (which checks the role and the regions again) and the audit
row of each outcome.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from services.dashboard import accounts, alerts_client
from services.dashboard.security import PageError, SignedIn
from shared.problems import ProblemError
from shared.settings import Settings

TEXT_FIELD = re.compile(r"^text_([a-z]{2})$")
REASON_REQUIRED = ("reject", "cancel")
TEXTS_TAKEN = ("edit", "update", "all-clear")


async def act(session: Session, settings: Settings, signed: SignedIn, alert_id: uuid.UUID,
              action: str, form: Mapping[str, Any], client: str) -> dict[str, Any]:
    """Take `action` (one of `alerts_client.ACTIONS`) with the form's `reason`,
    `text_<lang>` texts and `force`: the alert as the alerts API answers. Its refusals, and
    this dashboard's (not a reviewer; the alerts service down), are ProblemErrors, audited;
    a reject or cancel without a reason is a PageError (422), raised before anything is."""
    official = signed.official

    def audit(outcome: str, **detail: Any) -> None:
        accounts.audit(session, official.name, f"alert_{action}", outcome,
                       official_id=signed.account.id, target=f"alert {alert_id}",
                       client=client, **detail)

    if not official.has_role("reviewer"):
        audit("refused", reason=f"role {official.role}")
        raise ProblemError(403, "Forbidden", f"{official.name} is a {official.role}: only "
                           "reviewers act on alerts.")
    reason = str(form.get("reason") or "").strip()[:1000] or None
    if action in REASON_REQUIRED and not reason:
        raise PageError(422, "Reason required", f"Say why you {action} this alert.")
    body = _body(action, form, reason)
    try:
        response = await alerts_client.act(settings, official, alert_id, action, body)
    except Exception as exc:  # the alerts service is down or slow
        audit("error", error=exc.__class__.__name__)
        raise ProblemError(502, "Alerts service unavailable",
                           "The action was not taken: try again.") from exc
    ok = response.status_code < 400
    audit("ok" if ok else "refused", status=response.status_code, reason=reason)
    if not ok:
        raise ProblemError(response.status_code, "Not done",
                           alerts_client.problem_detail(response))
    result: dict[str, Any] = response.json()
    return result


def _body(action: str, form: Mapping[str, Any], reason: str | None) -> dict[str, Any]:
    texts = {m.group(1): str(v).strip() for k, v in form.items()
             if (m := TEXT_FIELD.match(k)) and str(v).strip()}
    body: dict[str, Any] = {"reason": reason,
                            "force": form.get("force") in ("1", "on", "true")}
    if action in TEXTS_TAKEN and texts:
        body["texts"] = texts
    return body
