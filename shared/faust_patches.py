"""Every place where Lookout reaches into faust-streaming's or aiokafka's internals (private
classes, attributes and context variables), in one module, each with the upstream report of
what it works around, and a version guard.

The patches were written against the versions in `SUPPORTED` (pinned together in
pyproject.toml, as faust needs). Importing this module warns (`RuntimeWarning`) when another
version is installed: each patch below must then be checked against the new code, and
`SUPPORTED` updated. The test suite turns the warning into a failure
(tests/shared/test_faust_patches.py), so a lock-file bump cannot skip that check.

What is patched, and why:

1. `_ConsumerThread._create_worker_consumer`: faust 0.15.3 builds the worker's aiokafka
   consumer with `fetch_max_wait_ms=1500` written in the code
   (faust/transport/drivers/aiokafka.py), which adds up to 1.5 s per hop on a quiet topic;
   the app's `fetch_max_wait_ms` is set on aiokafka's private `_fetch_max_wait_ms` instead.
   No upstream issue found.
2. `_ConsumerThread._fetch_records`: faust hands aiokafka its live set of active partitions;
   aiokafka reads it again while it waits, and an empty set means "every partition" to it,
   so records prefetched for partitions paused during the wait were handed over and dropped
   by faust. Upstream: robinhood/faust#69 describes the same race (the fix there, a lock
   around getmany, does not cover table recovery pausing the changelog partitions).
3. `_ConsumerThread._highwaters`: table recovery reads each changelog partition up to the
   end offset ListOffsets gives; Tansu 0.6 (memory storage) answers ListOffsets(latest) with
   the base offset of the last record batch + 1, so recovery stopped short. The end offsets
   are read from a fetch's high watermark (`fetched_end_offsets`). A Tansu behaviour, not a
   faust one; no upstream issue found.
4. `keep_changelog_queue_on_resume`: faust's changelog queue is emptied when the consumer
   resumes after a rebalance, yet the read offsets of the messages it held have moved on, so
   a recovering table can miss the first messages of a changelog partition for good.
   Upstream: robinhood/faust#580 and its open fix robinhood/faust#583 ("the existing data in
   the queue gets cleared on resume").
5. `committed_offset`: faust's consumer keeps the offsets it committed in the private
   `_committed_offset`; it has no public accessor (aiokafka's `committed()` asks the broker,
   a round trip per call). No upstream issue found.
6. `bind_current_event`: faust ties table writes and sends to the event in its private
   `faust.streams._current_event` context variable; an agent that handles held events out of
   arrival order sets it itself. No upstream issue found.
7, 8, 9. Contiguous offsets (`_Consumer`, only for an app with `contiguous_offsets`: the
   detection app, whose agents hold messages unacknowledged, sometimes for seconds). After a
   rebalance faust resumes the partitions before it seeks them to their committed offsets
   (`faust.tables.recovery.Recovery._resume_streams`), so a stream can be handed messages
   from the position fetched before the rebalance; faust then counts the offsets between the
   committed one and such a message as a "gap" it acknowledges itself (patch 7 stops that:
   our topics are neither compacted nor transactional, so a gap there is only skipped
   messages), commits when the acknowledged offsets start one past the committed offset
   (`_new_offset` allows a difference of 1; patch 8 commits only from the committed offset
   on, and only after the seek), and acknowledges the messages it skips for being from an
   earlier generation into the new one (patch 9 ignores those). Together they let a commit
   pass a candidate the novelty stage still held, which a later rebalance then lost (the
   kill -9 test of one of three workers). Messages faust drops this way are fetched again by
   the agents themselves (`services/detection/offsets.py`). Upstream: faust-streaming#216
   (resuming before the seek) and #312/#313 (the commit check in `_new_offset`).
7. `write_table`: `table[key] = value` on faust's aiokafka producer directly (faust's
   private `Producer._ensure_producer`): faust's own path for a changelog write (a
   `FutureMessage`, its producer buffer, the registry's serializers) costs several times
   aiokafka's send (docs/performance.md). No upstream issue found.
"""

from __future__ import annotations

import asyncio
import time
import warnings
import weakref
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import aiokafka
import faust
from faust.streams import _current_event
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT
from faust.utils import json as faust_json
from mode.utils.queues import ThrowableQueue

SUPPORTED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def version_mismatches() -> list[str]:
    """One line per package whose installed version is not the one the patches were
    written for."""
    found = []
    for package, wanted in SUPPORTED.items():
        installed = metadata.version(package)
        if installed != wanted:
            found.append(f"{package} {installed} is installed; shared/faust_patches.py was "
                         f"written for {wanted}")
    return found


def warn_on_other_versions() -> None:
    for line in version_mismatches():
        warnings.warn(f"{line}: check each patch there against the new code",
                      RuntimeWarning, stacklevel=2)


warn_on_other_versions()


# --- 3. Tansu's ListOffsets ---------------------------------------------------------------


async def fetched_end_offsets(bootstrap: str | list[str], listed: Mapping[TP, int],
                              security: Mapping[str, Any] | None = None) -> dict[TP, int]:
    """The end offset of each partition as a fetch reports it (its high watermark), given
    the end offsets ListOffsets gave (`listed`).

    Tansu (0.6, memory storage) answers ListOffsets(latest) with the base offset of the
    partition's last record batch + 1, so a partition whose last batch holds several records
    looks shorter than it is; its fetch responses carry the right high watermark. One fetch
    from `listed - 1` per partition, on a consumer of its own (no group).
    """
    if not listed:
        return {}
    probe = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=10,
                                      **(security or {}))
    await probe.start()
    try:
        tps = {tp: aiokafka.TopicPartition(tp.topic, tp.partition) for tp in listed}
        probe.assign(list(tps.values()))
        for tp, atp in tps.items():
            probe.seek(atp, max((listed[tp] or 0) - 1, 0))
        deadline = time.monotonic() + 30
        while any(probe.highwater(atp) is None for atp in tps.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("no fetch response for the end offsets of "
                                   f"{sorted(str(tp) for tp in tps)}")
            await probe.getmany(timeout_ms=100)
        return {tp: max(listed[tp] or 0, probe.highwater(atp) or 0) for tp, atp in tps.items()}
    finally:
        await probe.stop()


# --- 1, 2, 3: the worker's consumer thread --------------------------------------------------


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread with patches 1 (fetch_max_wait_ms), 2 (a copy of the active
    partitions) and 3 (end offsets from a fetch); see the module's docstring.

    Patch 3 matters because the worker otherwise handled messages against tables missing
    writes of committed messages (docs/detection.md, "State, recovery and replays")."""

    _bootstrap: list[str] = []
    _security: Mapping[str, Any] = {}

    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        wait = getattr(self.consumer.app, "fetch_max_wait_ms", 1500)
        consumer._fetch_max_wait_ms = int(wait)  # read when the fetcher starts
        self._bootstrap = faust_aiokafka.server_list(transport.url, transport.default_port)
        conf = self.consumer.app.conf
        self._security = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials,
                                                                     conf.ssl_context)
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,  # noqa: ASYNC109 - faust's signature
        max_records: int | None = None,
    ) -> RecordMap:
        """aiokafka gets a copy of the active partitions, taken when faust asks, and nothing
        when it is empty: with the live set, table recovery ending during the wait emptied
        it, and the records aiokafka had prefetched for the paused source partitions were
        handed over, dropped by faust, and never handled (the kill -9 test lost results of
        a partition this way)."""
        active = set(active_partitions)
        if not active:
            return {}
        return await super()._fetch_records(consumer, active, timeout, max_records)

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:  # last stable offsets, not the ends
            return listed
        return await fetched_end_offsets(self._bootstrap, listed, self._security)


class _Consumer(faust_aiokafka.Consumer):
    """faust's consumer with patches 7, 8 and 9 when the app asks for contiguous offsets
    (`PatchedApp.contiguous_offsets`); see the module's docstring."""

    seeked_generation = -1  # the generation whose seek to the committed offsets is done

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _contiguous(self) -> bool:
        return bool(getattr(self.app, "contiguous_offsets", False))

    async def perform_seek(self) -> None:
        generation = self.app.consumer_generation_id
        await super().perform_seek()
        self.seeked_generation = generation

    def seeked(self) -> bool:
        """The partitions of the current generation are at their committed offsets."""
        return self.seeked_generation == self.app.consumer_generation_id

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Patch 7: no offset counts as acknowledged unless a stream acknowledged it."""
        if not self._contiguous:
            await super()._add_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        """Patch 8: commit only from the committed offset on, after the seek to it."""
        if self._contiguous:
            acked = self._acked.get(tp)
            committed = self._committed_offset.get(tp)
            if not self.seeked() or (acked and committed is not None
                                     and min(acked) > committed):
                return None
        offset: int | None = super()._new_offset(tp)
        return offset

    def ack(self, message: Any) -> bool:
        """Patch 9: an acknowledgement of a message fetched before the last rebalance is
        not counted (the message is fetched again from the committed offset)."""
        generation = message.generation_id
        if self._contiguous and generation is not None \
                and generation != self.app.consumer_generation_id:
            return False
        acked: bool = super().ack(message)
        return acked


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class PatchedApp(faust.App):
    """A faust App whose transport uses the patched consumer thread; `fetch_max_wait_ms`
    is what patch 1 gives aiokafka."""

    fetch_max_wait_ms = 1500
    contiguous_offsets = False  # patches 7, 8 and 9 (the detection app sets it)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


# --- 4, 5, 6 --------------------------------------------------------------------------------


def keep_changelog_queue_on_resume(app: faust.App) -> None:
    """Patch 4: the app's changelog queue keeps what it holds when the consumer resumes.
    Recovery tells replayed changelog messages apart by offset, so nothing needs clearing.
    A kept message of a partition a rebalance took away is dropped when taken: faust's
    recovery would apply it to whichever table it handled before (its own comment, "XXX
    bug: the ``else`` branch above only logs a warning and falls through")."""
    class _Kept(ThrowableQueue):  # type: ignore[type-arg]
        async def get(self) -> Any:
            while True:
                event = await super().get()
                recovery = app.tables.recovery  # type: ignore[attr-defined]
                tp = event.message.tp
                if tp in recovery.active_tps or tp in recovery.standby_tps:
                    return event

    app.tables._changelog_queue = _Kept(  # type: ignore[attr-defined]
        maxsize=app.conf.stream_buffer_maxsize, flow_control=app.flow_control,
        clear_on_resume=False)


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """Patch 5: the offset faust's consumer last committed for `tp` (the next to read), or
    None before its first commit."""
    offsets: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    return offsets.get(tp)


def bind_current_event(event: Any) -> None:
    """Patch 6: table writes and sends from here on belong to `event` (as they do inside
    faust's own iteration of a stream)."""
    _current_event.set(weakref.ref(event))


# --- 7 --------------------------------------------------------------------------------------


async def write_table(table: Any, key: str, value: Any, partition: int | None
                      ) -> asyncio.Future[Any]:
    """Patch 7: what `table[key] = value` does for a table of str keys and JSON values (the
    value in the table's store, one changelog message to `partition`, serialized as faust
    does), on faust's aiokafka producer directly; returns the send's future (done when the
    broker acknowledged it). Faust flushes that producer before every commit."""
    table.data[key] = value
    producer = table.app.producer._ensure_producer()
    return await producer.send(  # type: ignore[no-any-return]
        table.changelog_topic.get_topic_name(), faust_json.dumps(value).encode(),
        key=faust_json.dumps(key).encode(), partition=partition)
