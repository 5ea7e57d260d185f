"""Settings keyed by region prefix (a region id or an ancestor: "us/wa" covers
"us/wa/king-county/98104"): the longest covering prefix wins. Both wildcards that the
services' settings use, "" and "*", cover every region."""

from __future__ import annotations

from collections.abc import Iterable

WILDCARDS = frozenset({"", "*"})


def covers(prefix: str, region_id: str) -> bool:
    return prefix in WILDCARDS or region_id == prefix or region_id.startswith(prefix + "/")


def longest_prefix(prefixes: Iterable[str], region_id: str) -> str | None:
    """The longest of `prefixes` that covers `region_id` (a wildcard counts as the
    shortest), or None."""
    best: str | None = None
    for prefix in prefixes:
        if covers(prefix, region_id) and (
                best is None or best in WILDCARDS or
                (prefix not in WILDCARDS and len(prefix) > len(best))):
            best = prefix
    return best
