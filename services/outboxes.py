"""Every service's outbox table, for the relay (`lookout relay`)."""

from __future__ import annotations

from typing import Any

from services.ingest.models import OutboxMessage as IngestOutbox

OUTBOX_TABLES: dict[str, Any] = {
    "ingest": IngestOutbox,
}
