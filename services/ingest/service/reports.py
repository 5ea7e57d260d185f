"""Overdose reports (no names), with their outbox rows; an Idempotency-Key makes a resend a
duplicate."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from services.ingest.models import OutboxMessage, OverdoseReport
from services.ingest.schemas import OverdoseReportIn
from services.ingest.service.common import (
    PRODUCER,
    Caller,
    ItemOutcome,
    accepted,
    detected_substance,
    duplicate_or_conflict,
    hash_content,
    normalize_sold_as,
    resolve_location,
)
from shared.db import utcnow
from shared.events import OverdoseReportV1
from shared.group_commit import writer_for
from shared.ids import uuid7
from shared.outbox import outbox_row
from shared.partition_keys import overdose_report_key
from shared.problems import ProblemError
from shared.topics import OVERDOSE_REPORTS


def build_report_event(body: OverdoseReportIn, site_id: uuid.UUID, report_id: uuid.UUID,
                       event_id: uuid.UUID) -> OverdoseReportV1:
    region = resolve_location(body.location)
    suspected = [detected_substance(name, method="other") for name in body.suspected_substances]
    ids = list(dict.fromkeys(s.substance_id for s in suspected if s.substance_id))
    sold = normalize_sold_as(body.sold_as) if body.sold_as else None
    sold_sub = sold.substance if sold else None
    return OverdoseReportV1(
        event_id=event_id, producer=PRODUCER, report_id=report_id, source=body.source,
        occurred_at=body.occurred_at, region_id=region.id, region_name=region.name,
        fatal=body.fatal, naloxone_doses=body.naloxone_doses, suspected_substance_ids=ids,
        sold_as_id=sold_sub.id if sold_sub else None, site_id=site_id,
        sold_as_raw=body.sold_as, sold_as_class=str(sold_sub.cls) if sold_sub else None,
        suspected_substances=suspected,
    )


def submit_overdose_reports(
    session: Session, caller: Caller, bodies: Sequence[OverdoseReportIn | None],
    idempotency_keys: Sequence[str | None],
) -> list[ItemOutcome]:
    """Store reports with their outbox rows. A report with an idempotency key that was seen
    before is a duplicate (same content: the first id) or a conflict (other content)."""
    wanted = sorted({k for k in idempotency_keys if k})
    known: dict[str, tuple[uuid.UUID, uuid.UUID, str, str]] = {
        str(found_key): (rid, eid, region, chash) for found_key, rid, eid, region, chash
        in repository.report_keys(session, caller.site_id, wanted)}
    outcomes: list[ItemOutcome] = []
    new_rows: list[Any] = []
    for body, key in zip(bodies, idempotency_keys, strict=True):
        if body is None:
            outcomes.append(ItemOutcome("rejected", reason="validation"))
            continue
        chash = hash_content(body)
        if key and key in known:
            rid, eid, region, first_hash = known[key]
            outcomes.append(duplicate_or_conflict(
                rid, eid, region, hmac.compare_digest(first_hash, chash),
                f"Idempotency-Key {key!r}"))
            continue
        report_id, event_id = uuid7(), uuid7()
        try:
            event = build_report_event(body, caller.site_id, report_id, event_id)
        except ProblemError as exc:
            outcomes.append(ItemOutcome("rejected", reason="location",
                                        errors=list(exc.extra.get("errors", []))))
            continue
        row = OverdoseReport(
            id=report_id, event_id=event_id, site_id=caller.site_id, idempotency_key=key,
            content_hash=chash, occurred_at=body.occurred_at, region_id=event.region_id,
            event=event.model_dump(mode="json"), received_at=utcnow(),
        )
        new_rows += [row, outbox_row(OutboxMessage, OVERDOSE_REPORTS,
                                     overdose_report_key(event.region_id), event)]
        if key:
            known[key] = (row.id, row.event_id, row.region_id, chash)
        outcomes.append(accepted(row))
    if new_rows:
        try:
            with session.begin_nested():
                session.add_all(new_rows)
                session.flush()
        except IntegrityError as exc:
            # Two requests with the same key raced; the loser retries and sees the winner.
            raise ProblemError(409, "Conflict", "A request with the same Idempotency-Key is "
                               "being processed; retry.") from exc
    return outcomes


def get_overdose_report(session: Session, caller: Caller,
                        report_id: uuid.UUID) -> OverdoseReport:
    row = session.get(OverdoseReport, report_id)
    if row is None or row.site_id != caller.site_id:
        raise ProblemError(404, "Not found", "No such report for this site.")
    return row




async def submit_grouped(url: str, caller: Caller, bodies: list[OverdoseReportIn | None],
                         keys: list[str | None]) -> list[ItemOutcome]:
    """Through the group commit, alone (not merged: a race on an Idempotency-Key fails the
    whole call with a 409)."""
    def store(session: Session, items: Sequence[Any], _: None) -> list[ItemOutcome]:
        return submit_overdose_reports(session, caller, bodies, keys)

    return await writer_for(url).store(bodies, store)
