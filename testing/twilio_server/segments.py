"""Segment counting (GSM-7 160/153 septets, UCS-2 70/67 UTF-16 code units) and Twilio's
date format."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from email.utils import format_datetime

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # each costs two septets (escape + char)
_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENDED


def _split(widths: Iterable[int], total: int, single: int, multi: int) -> int:
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:  # a character (escape pair / surrogate pair) never straddles segments
        if used + width > multi:
            segments += 1
            used = 0
        used += width
    return segments


@functools.lru_cache(maxsize=64)
def _rfc2822_second(moment: datetime) -> str:
    return format_datetime(moment)


def rfc2822(moment: datetime) -> str:
    """Twilio's date format (whole seconds), cached per second: a busy second formats once."""
    return _rfc2822_second(moment.replace(microsecond=0))


@functools.lru_cache(maxsize=256)
def count_segments(body: str) -> int:
    """Number of SMS segments Twilio bills for ``body`` (no smart-encoding substitution)."""
    if not body:
        return 1
    if _GSM7_ALL.issuperset(body):
        widths = [2 if ch in _GSM7_EXTENDED else 1 for ch in body]
        return _split(widths, sum(widths), 160, 153)
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return _split(widths, sum(widths), 70, 67)
