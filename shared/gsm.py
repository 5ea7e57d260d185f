"""SMS segment counting: GSM-7 (160 chars, 153 per part) or UCS-2 (70, 67 per part)."""

from __future__ import annotations

import math
import unicodedata

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def segment_count(text: str) -> int:
    if not text:
        return 1
    if is_gsm7(text):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return 1 if units <= 160 else math.ceil(units / 153)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in text)  # UTF-16 code units
    return 1 if units <= 70 else math.ceil(units / 67)


def strip_invisible(text: str) -> str:
    """`text` without the characters a reader cannot see: bidi controls (U+202E turns the
    text around), zero-width characters and every other format or control character but a
    newline. They hide or reorder what a subscriber reads, and force UCS-2."""
    return "".join(c for c in text if c == "\n" or unicodedata.category(c) not in ("Cf", "Cc"))


def sms_text_problem(text: str, max_segments: int) -> str | None:
    """Why `text` may not go out without a reviewer's look: not GSM-7 (UCS-2 segments hold
    70 characters, not 160), or more than `max_segments` segments; None when it may."""
    if not is_gsm7(text):
        return "not GSM-7"
    if segment_count(text) > max_segments:
        return f"over {max_segments} segments"
    return None
