from __future__ import annotations

from services.detection.rules import unexpected_adulterants
from testing.builders import result_event


def test_fentanyl_in_cocaine_is_a_critical_signal() -> None:
    result = result_event(("cocaine", "stimulant"), (("cocaine", "stimulant", 2),
                                                     ("fentanyl", "opioid", 3)))
    [signal] = unexpected_adulterants(result)
    assert signal.substance_id == "fentanyl" and signal.severity == "critical"
    assert signal.region_id == result.region_id
    assert signal.evidence_event_ids == [result.event_id]
    assert signal.occurred_at == result.collected_at  # event time, not wall-clock time


def test_fentanyl_in_an_opioid_supply_is_expected() -> None:
    result = result_event(("unknown-opioid", "opioid"), (("fentanyl", "opioid", 3),))
    assert unexpected_adulterants(result) == []


def test_xylazine_in_opioids_and_nitazenes_anywhere_are_signals() -> None:
    result = result_event(("unknown-opioid", "opioid"),
                          (("fentanyl", "opioid", 3), ("xylazine", "alpha2_agonist", 3),
                           ("protonitazene", "nitazene", 4)))
    found = {s.substance_id: s.severity for s in unexpected_adulterants(result)}
    assert found == {"xylazine": "warning", "protonitazene": "critical"}


def test_low_risk_cuts_are_not_signals() -> None:
    result = result_event(("cocaine", "stimulant"), (("caffeine", "cut", 1),))
    assert unexpected_adulterants(result) == []


def test_replaying_a_result_gives_the_same_signal_ids() -> None:
    result = result_event()
    first = [s.event_id for s in unexpected_adulterants(result)]
    assert first and first == [s.event_id for s in unexpected_adulterants(result)]
