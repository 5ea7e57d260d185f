"""Row and event ids."""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 7 << 76
_VARIANT_RFC = 0b10 << 62
_RANDOM_A = ((1 << 12) - 1) << 64  # 12 random bits after the version
_RANDOM_B = (1 << 62) - 1  # 62 random bits after the variant


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7: the Unix time in ms, then 74 random bits).

    Why: rows keyed by random UUIDs (version 4) land all over their indexes, so a commit of
    a thousand rows rewrites most of each index's pages (and the WAL grows with the table);
    keys that grow with time are appended, a few pages per index. Still unguessable
    (74 random bits); the id reveals the millisecond it was made, which the row's
    `received_at` says anyway."""
    random = int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(time.time_ns() // 1_000_000) << 80 | _VERSION_7 | _VARIANT_RFC
                     | (random & _RANDOM_A) | (random & _RANDOM_B))
