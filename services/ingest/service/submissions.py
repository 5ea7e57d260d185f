"""A site's own submissions, paged by the time they were received."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import repository
from services.ingest.models import DrugCheck, OverdoseReport
from services.ingest.service.common import Caller
from shared.problems import ProblemError


def parse_since(since: str | None) -> tuple[datetime, uuid.UUID] | None:
    """`since` is a time (ISO 8601 with a zone) or the `next_since` cursor of a page."""
    if not since:
        return None
    text, _, last_id = since.partition("~")
    try:
        when = datetime.fromisoformat(text.replace(" ", "+").replace("Z", "+00:00"))
        after = uuid.UUID(last_id) if last_id else uuid.UUID(int=(1 << 128) - 1)
    except ValueError as exc:
        raise _bad_since() from exc
    if when.tzinfo is None:
        raise _bad_since()
    return when, after


def _bad_since() -> ProblemError:
    message = "since must be a time with a zone (2026-01-31T12:00:00Z) or a next_since cursor"
    return ProblemError(422, "Validation failed", message,
                        errors=[{"field": "/since", "in": "query", "message": message,
                                 "type": "value_error"}])


def list_submissions(session: Session, caller: Caller, since: str | None,
                     limit: int) -> tuple[list[tuple[str, Any]], str | None]:
    """The caller's site's own results and reports received after `since`, oldest first."""
    cursor = parse_since(since)
    found: list[tuple[str, Any]] = []
    models: list[tuple[str, Any]] = []
    if "results" in caller.scopes:
        models.append(("drug_check", DrugCheck))
    if "reports" in caller.scopes:
        models.append(("overdose_report", OverdoseReport))
    for kind, model in models:
        rows = repository.received_after(session, model, caller.site_id, cursor, limit + 1)
        found += [(kind, row) for row in rows]
    found.sort(key=lambda pair: (pair[1].received_at, pair[1].id))
    page, more = found[:limit], len(found) > limit
    next_since = None
    if more and page:
        last = page[-1][1]
        next_since = f"{last.received_at.isoformat()}~{last.id}"
    return page, next_since


