"""Small builders for test data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import (
    ContaminationSignalV1,
    DetectedSubstanceV1,
    DrugCheckResultV1,
    Severity,
)
from shared.regions import by_postal_code


def drug_check(sample_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sample_id": f"s-{uuid.uuid4().hex[:8]}" if sample_id is None else sample_id,
        "collected_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "location": {"postal_code": "98104"},
        "sold_as": "cocaine",
        "form": "powder",
        "methods": ["ftir"],
        "substances": [{"name": "Cocaine HCl"}, {"name": "Fentanyl HCl"}],
    }
    body.update(overrides)
    return body


def result_event(sold_as: tuple[str | None, str | None] = ("cocaine", "stimulant"),
                 found: tuple[tuple[str, str, int], ...] = (("fentanyl", "opioid", 3),),
                 postal_code: str = "98104") -> DrugCheckResultV1:
    region = by_postal_code(postal_code)
    return DrugCheckResultV1(
        producer="test", result_id=uuid.uuid4(), site_id=uuid.uuid4(), sample_id="x",
        collected_at=datetime(2026, 11, 1, 12, tzinfo=UTC), region_id=region.id,
        region_name=region.name, sold_as_raw=sold_as[0], sold_as_id=sold_as[0],
        sold_as_class=sold_as[1],
        substances=[DetectedSubstanceV1(raw=s, substance_id=s, status="recognized",
                                        substance_class=c, risk=r) for s, c, r in found],
    )


def contamination_signal(region_id: str = "us/wa/king-county/98104",
                         severity: Severity = "critical") -> ContaminationSignalV1:
    return ContaminationSignalV1(
        producer="test", pattern="unexpected_adulterant", region_id=region_id,
        region_name="98104 (Seattle, WA)", severity=severity,
        occurred_at=datetime(2026, 11, 1, 12, tzinfo=UTC), evidence_event_ids=[uuid.uuid4()],
        substance_id="fentanyl", substance_name="Fentanyl", sold_as_id="cocaine",
        sold_as_name="Cocaine",
    )
