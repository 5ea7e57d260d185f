"""Contamination rules over one drug-checking result (pure functions, no I/O).

An adulterant is *unexpected* when it is high risk and the sold-as does not explain it:
fentanyl in cocaine, xylazine or medetomidine in opioids, any nitazene, carfentanil.
"""

from __future__ import annotations

import uuid

from shared import substances
from shared.events import ContaminationSignalV1, DrugCheckResultV1, Severity

PRODUCER = "detection"
# Found anywhere, these are news, whatever the sample was sold as.
ALWAYS_UNEXPECTED_CLASSES = {"nitazene", "alpha2_agonist"}
ALWAYS_UNEXPECTED_IDS = {"carfentanil"}
OPIOID_CLASSES = {"opioid", "fentanyl_analog"}


def _explained(sold_as_id: str | None, sold_as_class: str | None,
               substance: substances.Substance) -> bool:
    if substance.id in ALWAYS_UNEXPECTED_IDS or substance.cls in ALWAYS_UNEXPECTED_CLASSES:
        return sold_as_id == substance.id
    if sold_as_id == substance.id:
        return True
    # Opioid supplies are expected to hold fentanyl and its common analogs.
    return substance.cls in OPIOID_CLASSES and sold_as_class in OPIOID_CLASSES


def is_unexpected(result: DrugCheckResultV1, substance: substances.Substance) -> bool:
    """True when this high-risk substance is news for what the sample was sold as."""
    return substances.is_high_risk(substance) and not _explained(
        result.sold_as_id, result.sold_as_class, substance)


def _severity(substance: substances.Substance, sold_as_class: str | None) -> Severity:
    if substance.risk >= 4:
        return "critical"
    if substance.cls in OPIOID_CLASSES and sold_as_class not in OPIOID_CLASSES:
        return "critical"  # opioids in a non-opioid supply reach people with no tolerance
    return "warning"


def unexpected_adulterants(result: DrugCheckResultV1) -> list[ContaminationSignalV1]:
    """One signal per high-risk substance the sold-as does not explain.

    The signal's event_id is derived from the result's, so a replay gives the same ids.
    """
    signals: list[ContaminationSignalV1] = []
    seen: set[str] = set()
    sold_name = None
    if result.sold_as_id:
        sold_name = substances.get_substance(result.sold_as_id).name
    for detected in result.substances:
        if not detected.substance_id or detected.substance_id in seen:
            continue
        substance = substances.get_substance(detected.substance_id)
        if not substances.is_high_risk(substance):
            continue
        if _explained(result.sold_as_id, result.sold_as_class, substance):
            continue
        seen.add(substance.id)
        signals.append(ContaminationSignalV1(
            event_id=uuid.uuid5(result.event_id, f"unexpected_adulterant:{substance.id}"),
            producer=PRODUCER,
            pattern="unexpected_adulterant",
            region_id=result.region_id,
            region_name=result.region_name,
            severity=_severity(substance, result.sold_as_class),
            occurred_at=result.collected_at,
            evidence_event_ids=[result.event_id],
            substance_id=substance.id,
            substance_name=substance.name,
            sold_as_id=result.sold_as_id,
            sold_as_name=sold_name or result.sold_as_raw,
        ))
    return signals
