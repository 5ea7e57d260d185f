from __future__ import annotations

import io
import logging

from shared.crypto import (
    decrypt_phone,
    encrypt_phone,
    hash_api_key,
    mask_phone,
    new_api_key,
    phone_lookup_hash,
)
from shared.gsm import segment_count
from shared.logging import JsonFormatter, RepeatBackoff, scrub

PHONE = "+12065550100"


def test_phone_encryption_round_trips_and_hides_the_number() -> None:
    token = encrypt_phone("secret-a", PHONE)
    assert PHONE not in token and PHONE[2:] not in token
    assert decrypt_phone("secret-a", token) == PHONE
    assert encrypt_phone("secret-a", PHONE) != token  # randomized


def test_lookup_hash_is_keyed_and_stable() -> None:
    assert phone_lookup_hash("a", PHONE) == phone_lookup_hash("a", PHONE)
    assert phone_lookup_hash("a", PHONE) != phone_lookup_hash("b", PHONE)
    assert PHONE[2:] not in phone_lookup_hash("a", PHONE)


def test_api_keys_are_random_and_stored_as_hashes() -> None:
    a, b = new_api_key(), new_api_key()
    assert a != b and a.startswith("lk_") and len(a) > 40
    assert hash_api_key(a) != a and len(hash_api_key(a)) == 64


def test_mask_shows_only_the_last_two_digits() -> None:
    assert mask_phone(PHONE).endswith("00")
    assert "206" not in mask_phone(PHONE)


def test_logs_never_carry_phone_numbers() -> None:
    assert "555" not in scrub("texting +1 (206) 555-0100 now")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger("test.scrub")
    logger.addHandler(handler)
    logger.warning("sending to %s", PHONE)
    logger.removeHandler(handler)
    assert PHONE not in stream.getvalue() and "[phone]" in stream.getvalue()


def test_segments_follow_gsm7_and_ucs2_limits() -> None:
    assert segment_count("a" * 160) == 1
    assert segment_count("a" * 161) == 2
    assert segment_count("a" * 306) == 2
    assert segment_count("a" * 307) == 3
    assert segment_count("€" * 80) == 1  # extension characters count double
    assert segment_count("€" * 81) == 2
    assert segment_count("é" * 160) == 1  # é is in the GSM-7 basic set
    assert segment_count("ñ" * 70 + "ő") == 2  # ő is not: UCS-2
    assert segment_count("😀" * 35) == 1 and segment_count("😀" * 36) == 2


def test_repeated_errors_are_backed_off_and_counted() -> None:
    """While the broker is away, every aiokafka client logs each retry (about 260 lines a
    second under `lookout run`): a repeated message is let through at doubling intervals,
    with the count of those dropped; other messages and info lines pass."""
    step = [0]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatBackoff(first=1.0, longest=8.0, clock=lambda: step[0] / 10))
    logger = logging.getLogger("test.backoff")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for _ in range(100):  # 10 s of retries every 0.1 s
            logger.error("Unable connect to node with id %s: %s", 1, "refused")
            logger.info("an info line")
            step[0] += 1
        logger.error("something else")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    repeated = [line for line in lines if line.startswith("Unable connect")]
    # at 0, 1, 3 and 7 s (intervals 1, 2, 4, then 8)
    assert len(repeated) == 4, repeated
    assert repeated[0] == "Unable connect to node with id 1: refused"
    assert repeated[1] == "Unable connect to node with id 1: refused [9 more like it dropped]"
    assert repeated[3].endswith("[39 more like it dropped]")
    assert lines.count("an info line") == 100
    assert lines[-1] == "something else"
