"""Alert texts per language. Short, plain GSM-7, always with the STOP line."""

from __future__ import annotations

from shared.events import ContaminationSignalV1, SpikeSignalV1

STOP_LINE = {
    "en": "Reply STOP to cancel.",
    "es": "Responda STOP para cancelar.",
    "fr": "Repondez STOP pour annuler.",
}


def alert_text(signal: ContaminationSignalV1 | SpikeSignalV1, language: str = "en") -> str:
    stop = STOP_LINE.get(language, STOP_LINE["en"])
    if isinstance(signal, ContaminationSignalV1):
        sold = f" in a sample sold as {signal.sold_as_name}" if signal.sold_as_name else ""
        return (
            f"Lookout ALERT ({signal.severity}): {signal.substance_name} found{sold} "
            f"in {signal.region_name}. Don't use alone, start low, carry naloxone. {stop}"
        )
    return (
        f"Lookout ALERT ({signal.severity}): more overdoses than usual in "
        f"{signal.region_name}. Don't use alone, start low, carry naloxone. {stop}"
    )
