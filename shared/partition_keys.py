"""Kafka message keys of the events whose consumers keep state per area.

Overdose reports are keyed by their state (the first two segments of the region id,
"us/wa" of "us/wa/king-county/98104"): every spike area at every level (postal code, county,
state) is inside one state, so all of an area's reports are in one partition and a
detection worker that owns the partition owns the whole area (docs/detection.md, "N
workers"). Drug-check results are keyed by their region id: detection's per-region
patterns need nothing wider."""

from __future__ import annotations

STATE_SEGMENTS = 2  # path segments of a region id that name its state


def state_of(region_id: str) -> str:
    """The region's state ("us/wa"); a region id of fewer segments is its own state."""
    return "/".join(region_id.split("/")[:STATE_SEGMENTS])


def overdose_report_key(region_id: str) -> str:
    return state_of(region_id)


def drug_check_result_key(region_id: str) -> str:
    return region_id
