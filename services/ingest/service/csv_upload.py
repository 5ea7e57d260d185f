"""A CSV file of results (the Drug Checking BC export or the generic template), stored in
chunks of rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.ingest import metrics
from services.ingest.csv_import import parse_csv
from services.ingest.schemas import CsvImportOut, CsvRejectedRow, ItemError
from services.ingest.service.common import Caller
from services.ingest.service.drug_checks import submit_drug_checks
from shared.db import write_session

CSV_CHUNK = 1000  # rows per transaction in a CSV import
_OLDEST = datetime.min.replace(tzinfo=UTC)


def import_csv(url: str, caller: Caller, text: str, province: str,
               progress: Callable[[int, int], None] | None = None) -> CsvImportOut:
    """Import a CSV file, one transaction per chunk of rows, oldest rows first: exports
    are often newest first, and detection takes each partition in the order it comes
    (docs/detection.md, "Event time, not arrival order"). `progress(done, total)` is called
    after each chunk's commit."""
    fmt, parsed = parse_csv(text, province)
    rows = sorted(parsed, key=lambda r: r.body.collected_at if r.body else _OLDEST)
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    rejected: list[CsvRejectedRow] = []
    total = 0

    def flush(chunk: list[Any]) -> None:
        with write_session(url) as s:
            outcomes = submit_drug_checks(s, caller, [r.body for r in chunk])
        for row, outcome in zip(chunk, outcomes, strict=True):
            reason = row.reason or outcome.reason or ""
            status = outcome.status
            counts[status] += 1
            metrics.count("drug_check", status, reason or None)
            if status == "rejected":
                rejected.append(CsvRejectedRow(
                    line=row.line, reason=reason,
                    errors=[ItemError(**e) for e in (row.errors or outcome.errors)]))

    for start in range(0, len(rows), CSV_CHUNK):
        chunk = rows[start:start + CSV_CHUNK]
        flush(chunk)
        total += len(chunk)
        if progress is not None:
            progress(total, len(rows))
    rejected.sort(key=lambda r: r.line)
    return CsvImportOut(format=fmt, rows=total, rejected_rows=rejected, **counts)
