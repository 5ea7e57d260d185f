"""The SMS texts of a referral conversation: plain GSM-7, at most two segments each."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any

from shared.gsm import is_gsm7, segment_count

MAX_SEGMENTS = 2
STOP_LINE = "STOP to end."
FALLBACK = "In a crisis call or text 988. For other services call 211."


def gsm(text: str) -> str:
    """Drop accents and anything GSM-7 cannot carry (names come from directory data)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain if is_gsm7(c))


def fit(parts: list[str], shrinkable: list[int], limit: int = MAX_SEGMENTS) -> str:
    """Join `parts` with newlines; shorten the parts at `shrinkable` until it fits."""
    parts = [gsm(p) for p in parts]
    for _ in range(200):
        text = "\n".join(parts)
        if segment_count(text) <= limit:
            return text
        longest = max(shrinkable, key=lambda i: len(parts[i]), default=None)
        if longest is None or len(parts[longest]) <= 12:
            break
        parts[longest] = parts[longest][: len(parts[longest]) - 4].rstrip() + "."
    text = "\n".join(parts)
    return text[: 153 * limit]


def _hhmm(when: datetime | None) -> str:
    return "" if when is None else f"{when:%H:%M}"


def options_text(options: list[dict[str, Any]]) -> str:
    """Numbered options; long names are shortened (never the distance or the hours)."""
    head = "Lookout: places that can help, near you:"
    names, suffixes = [], []
    for option in options:
        when = ("open now" if option["opens_in_minutes"] == 0
                else f"opens in {option['opens_in_minutes']}min")
        dist = option.get("distance_km")
        suffixes.append((f" {dist:.0f}km" if isinstance(dist, (int, float)) else "")
                        + f" {when}")
        names.append(gsm(str(option["name"])))
    numbers = ", ".join(str(n) for n in range(1, len(options) + 1))
    tail = (f"Reply {numbers}. We tell only the place you pick what you need and your "
            f"language. {STOP_LINE}")

    def render() -> str:
        lines = [f"{n} {name}{suffix}" for n, (name, suffix) in
                 enumerate(zip(names, suffixes, strict=True), start=1)]
        return "\n".join([head, *lines, tail])

    for _ in range(300):
        text = render()
        if segment_count(text) <= MAX_SEGMENTS or not names:
            return text
        longest = max(range(len(names)), key=lambda i: len(names[i]))
        if len(names[longest]) <= 8:
            break
        names[longest] = names[longest][:-3].rstrip() + "."
    return fit([render()], shrinkable=[0])


def details_text(name: str, address: str, hours: str, phone: str) -> str:
    return fit([f"Lookout: {name} knows you're coming.", f"Address: {address}",
                f"Hours: {hours}", f"Phone: {phone}",
                "We'll check in later. " + STOP_LINE], shrinkable=[0, 1, 2])


def followup_text() -> str:
    return "Lookout: did you connect? Reply 1 yes, 2 no, 3 other options. " + STOP_LINE


def none_found_text() -> str:
    return ("Lookout: we found no place open near you right now. " + FALLBACK + " Text "
            "TREATMENT again later.")


def ask_location_text() -> str:
    return "Lookout: to find help near you, reply with your ZIP code (or city, BC). " + STOP_LINE


def ask_choice_text(count: int) -> str:
    numbers = ", ".join(str(n) for n in range(1, count + 1))
    return f"Lookout: please reply {numbers} to pick a place. {STOP_LINE}"


def thanks_text(connected: bool) -> str:
    if connected:
        return "Lookout: glad you connected. Text TREATMENT any time you need help again."
    return "Lookout: sorry it didn't work out. " + FALLBACK + " Text TREATMENT to try again."


def stopped_text() -> str:
    return "Lookout: referral ended. We won't text you about it again."
