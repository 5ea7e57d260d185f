"""Partition counts come from the settings: the registry, the topics created on the broker,
the faust apps and the detection worker's tables and committed offsets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from shared.broker import running_tansu
from shared.settings import REPO_ROOT, get_settings
from shared.topics import ALL_TOPICS, OVERDOSE_REPORTS, SIGNALS

ENV = {"LOOKOUT_KAFKA_PARTITIONS": "6",
       "LOOKOUT_KAFKA_TOPIC_PARTITIONS": json.dumps({"overdose.reports.v1": 12})}


@pytest.fixture
def six_partitions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


async def _partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
    finally:
        await consumer.stop()


def test_the_registry_and_the_broker_take_the_partition_counts_from_the_settings(
    six_partitions: None,
) -> None:
    assert SIGNALS.partitions == 6
    assert OVERDOSE_REPORTS.partitions == 12
    with running_tansu() as bootstrap:  # creates every topic of the registry
        names = [n for t in ALL_TOPICS for n in (t.name, t.dlq)]
        found = asyncio.run(_partitions(bootstrap, names))
    assert found == {n: 12 if n.startswith("overdose.reports.v1") else 6 for n in names}


def test_the_detection_worker_reads_the_partition_counts_from_the_settings() -> None:
    code = (
        "from services.detection import agents as a\n"
        "print(a.app.conf.topic_partitions, a.tables.spike_counts.table.partitions,\n"
        "      a.tables.positivity.table.partitions, len(a.processor.committed_reports),\n"
        "      list(a.processor.committed_results))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, **ENV, "LOOKOUT_ENV": "test"})
    assert out.stdout.split("\n")[0] == "6 12 6 12 [0, 1, 2, 3, 4, 5]", out.stderr[-2000:]
