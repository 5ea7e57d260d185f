"""Alert lifecycle, by domain: signal -> alert, new or merged into an open one (`signals`);
review or approval by policy (`policy`, `review`); one delivery per subscriber (`fanout`);
provider status callbacks (`statuses`); texts other services ask for (`requests`);
`common` holds the texts, approval and audit they share.

Functions take a session and never commit: the caller's unit of work does. The names
below are the package's interface.
"""

from services.alerts.service.common import (
    MAX_SEGMENTS,
    OPEN,
    PAGE_SIZE,
    SEVERITY_RANK,
    SYSTEM,
    audit,
    segments_of,
    snapshot,
)
from services.alerts.service.fanout import (
    expire_if_due,
    fan_out,
    fan_out_page,
    finish_if_done,
    pending_deliveries,
    region_and_ancestors,
)
from services.alerts.service.policy import (
    CONFIRMATORY_METHODS,
    RegionPolicy,
    approval_block,
    as_sold_novel,
    auto_approves,
    lab_confirmed,
    policy_for,
    text_block,
)
from services.alerts.service.requests import request_delivery
from services.alerts.service.review import (
    TEXT_AUTHORING,
    approve,
    cancel,
    edit,
    follow_up,
    get_alert,
    needs_second_reviewer,
    reject,
    review_state,
)
from services.alerts.service.signals import alert_from_signal
from services.alerts.service.statuses import (
    EARLY_STATUS_DAYS,
    STATUS_RANK,
    apply_early_statuses,
    record_status,
)

__all__ = [
    "CONFIRMATORY_METHODS", "EARLY_STATUS_DAYS", "MAX_SEGMENTS", "OPEN", "PAGE_SIZE",
    "SEVERITY_RANK", "STATUS_RANK", "SYSTEM", "TEXT_AUTHORING", "RegionPolicy",
    "alert_from_signal", "apply_early_statuses", "approval_block", "approve", "as_sold_novel",
    "audit", "auto_approves", "cancel", "edit", "expire_if_due", "fan_out",
    "fan_out_page", "finish_if_done", "follow_up", "get_alert", "lab_confirmed",
    "needs_second_reviewer", "pending_deliveries", "policy_for", "record_status",
    "region_and_ancestors", "reject", "request_delivery", "review_state", "segments_of",
    "snapshot", "text_block",
]
