"""Detection agents: drug-check results in, contamination signals out."""

from __future__ import annotations

import logging
from typing import Any

from services.detection import rules
from services.detection.app import app
from shared.events import DrugCheckResultV1
from shared.streams import process_each
from shared.topics import DRUGCHECK_RESULTS, SIGNALS

log = logging.getLogger(__name__)

results_topic = app.topic(DRUGCHECK_RESULTS.name, value_serializer="raw", key_serializer="raw",
                          partitions=DRUGCHECK_RESULTS.partitions)
results_dlq = app.topic(DRUGCHECK_RESULTS.dlq, value_serializer="raw", key_serializer="raw",
                        partitions=DRUGCHECK_RESULTS.partitions)
signals_topic = app.topic(SIGNALS.name, value_serializer="raw", key_serializer="raw",
                          partitions=SIGNALS.partitions)


async def handle_result(result: DrugCheckResultV1) -> None:
    for signal in rules.unexpected_adulterants(result):
        log.info("signal %s %s in %s", signal.pattern, signal.substance_id, signal.region_id)
        await signals_topic.send(key=signal.region_id.encode(),
                                 value=signal.model_dump_json().encode())


@app.agent(results_topic)
async def contamination(stream: Any) -> None:
    await process_each(
        stream, service="detection", agent="contamination",
        parse=DrugCheckResultV1.model_validate_json, handle=handle_result, dlq=results_dlq,
    )
