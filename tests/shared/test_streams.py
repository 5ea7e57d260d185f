"""The Faust app factory's producer settings (see docs/detection.md, "Producer batching")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import CachedPartitioner
from shared.settings import Settings
from shared.streams import make_faust_app


def test_faust_sends_wait_briefly_to_share_a_request_and_hash_keys_once(tmp_path: Path) -> None:
    app = make_faust_app("streams-test", Settings(var_dir=str(tmp_path),
                                                  stream_producer_linger_ms=7,
                                                  stream_fetch_max_wait_ms=3))
    assert app.conf.producer_linger == 0.007
    assert app.fetch_max_wait_ms == 3  # type: ignore[attr-defined]
    conf: Any = app.conf  # faust types producer_partitioner as a method of its settings
    partitioner = conf.producer_partitioner
    assert isinstance(partitioner, CachedPartitioner)
    # the same partition as Kafka's default (murmur2) for every key, asked twice
    default = DefaultPartitioner()
    for key in (b"us/wa/98101", b"c|ca/bc/victoria", b"x" * 200):
        want = default(key, [0, 1, 2, 3], [0, 1, 2, 3])
        assert partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3]) == want
        assert partitioner(key, [0, 1, 2, 3], [0, 1, 2, 3]) == want


def test_the_default_linger_is_a_few_milliseconds(tmp_path: Path) -> None:
    app = make_faust_app("streams-test", Settings(var_dir=str(tmp_path)))
    assert 0 < app.conf.producer_linger <= 0.01
