"""What every dashboard page reads, from the dashboard's own tables only
(`services.dashboard.models`), one module per page; each function returns plain
dataclasses. See `common` for the rows the pages share."""

from services.dashboard.aggregates import substance_name
from services.dashboard.repository.areas import MapArea, map_areas, map_data
from services.dashboard.repository.common import (
    AlertRow,
    ReportRow,
    SampleRow,
    SignalRow,
    SubstanceFound,
    WaitingDraft,
)
from services.dashboard.repository.now import (
    NowPage,
    RegionSignals,
    SiteActivity,
    SmokeRoundTrip,
    last_smoke,
    now_page,
    open_signals,
    recent_alerts,
    regions_with_open_signals,
    review_queue,
    site_activity,
)
from services.dashboard.repository.performance import (
    Latency,
    Performance,
    RejectRate,
    performance,
)
from services.dashboard.repository.referrals import ReferralFunnel, referrals_funnel
from services.dashboard.repository.supply import (
    DrugSupply,
    PositivityPoint,
    SoldAsRow,
    drug_supply,
)
from services.dashboard.repository.trends import (
    RegionNode,
    Trend,
    TrendPoint,
    region_tree,
    trends,
)
from services.dashboard.repository.workbench import (
    AuditEntry,
    Funnel,
    TimelineStep,
    Workbench,
    funnel_of,
    workbench,
)

__all__ = [
    "AlertRow", "AuditEntry", "DrugSupply", "Funnel", "Latency", "MapArea", "NowPage",
    "Performance", "PositivityPoint", "ReferralFunnel", "RegionNode", "RegionSignals",
    "RejectRate", "ReportRow", "SampleRow", "SignalRow", "SiteActivity", "SmokeRoundTrip",
    "SoldAsRow", "SubstanceFound", "TimelineStep", "Trend", "TrendPoint", "WaitingDraft",
    "Workbench", "drug_supply", "funnel_of", "last_smoke", "map_areas", "map_data",
    "now_page", "open_signals", "performance", "recent_alerts", "referrals_funnel",
    "region_tree", "regions_with_open_signals", "review_queue", "site_activity",
    "substance_name", "trends", "workbench",
]
