"""Every service's outbox table, for the relay (`lookout relay`)."""

from __future__ import annotations

from typing import Any

from services.alerts.models import OutboxMessage as AlertsOutbox
from services.ingest.models import OutboxMessage as IngestOutbox
from services.referrals.models import OutboxMessage as ReferralsOutbox

OUTBOX_TABLES: dict[str, Any] = {
    "ingest": IngestOutbox,
    "alerts": AlertsOutbox,
    "referrals": ReferralsOutbox,
}
