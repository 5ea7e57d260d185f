"""A detection agent's source topic consumed in event-time order, with batched table
writes (the agents in `agents` run one per source topic; see docs/detection.md, "Event
time, not arrival order" and "N workers")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TP
from pydantic import ValidationError

from services.detection.app import app
from services.detection.novelty import Order
from services.detection.offsets import Contiguous
from services.detection.ordering import EventTimeMerge, Held
from services.detection.tablecache import WriteBehind
from shared.faust_patches import bind_current_event, committed_offset, write_table
from shared.streams import dead_letter, handle_with_retries

FLUSH_EVERY = 1000  # messages handled before their table writes are flushed and acknowledged


class OrderedSource:
    """One agent's source topic consumed in event-time order (`ordering.EventTimeMerge`):
    messages are held, handled when no partition of this worker can still bring an older
    one, and acknowledged in offset order once handled and their table writes flushed.

    The flush is per batch: after `FLUSH_EVERY` messages, or at the next timer tick
    (`RELEASE_INTERVAL`), whichever comes first. A key written by many messages of a batch
    is one changelog write; every write still goes to the changelog partition of its own
    message (`WriteBehind`), and a commit covers only flushed messages. A rebalance drops
    what a batch held (`forget`): its messages were not acknowledged and are delivered
    again."""

    def __init__(self, topic: str, agent: str, parse: Callable[[bytes], Any],
                 at: Callable[[Any], float], handle: Callable[[Any, int, int], Awaitable[None]],
                 dlq: Any, own: tuple[Any, ...]) -> None:
        self.topic, self.agent, self.parse, self.at = topic, agent, parse, at
        self.handle, self.dlq = handle, dlq
        # the tables this agent writes: it writes only those, before acknowledging its own
        # messages
        self.own: tuple[WriteBehind, ...] = own
        self.merge = EventTimeMerge()
        self.offsets = Contiguous(app, topic)
        self.lock = asyncio.Lock()
        self.stream: Any = None
        self.last: dict[int, Order] = {}  # per partition, the last message handled
        self.unacked: list[Any] = []  # events handled, acknowledged after the next flush
        self.epoch = 0  # rebalances seen (a batch of an earlier epoch is dropped)
        self._partitions: list[int] | None = None  # of the current assignment

    def bounds(self) -> dict[str, list[Any]]:
        """Per partition owned: [time, id of the last message handled (None, None before
        any), caught up (nothing held, nothing more to fetch)]."""
        out: dict[str, list[Any]] = {}
        for p in self.partitions():
            at, event_id = self.last.get(p, (None, None))
            caught_up = not self.merge.holds(p) and self.caught_up(p, self.merge.next_offset(p))
            out[str(p)] = [at, event_id, caught_up]
        return out

    def partitions(self) -> list[int]:
        if self._partitions is None:  # faust builds the assignment anew on every call
            self._partitions = [tp.partition for tp in app.consumer.assignment()
                                if tp.topic == self.topic]
        return self._partitions

    def assigned(self) -> None:
        self._partitions = None

    def caught_up(self, partition: int, next_offset: int | None) -> bool:
        tp = TP(self.topic, partition)
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # not fetched yet
            return False
        if highwater is None:
            return False
        if next_offset is None:
            next_offset = committed_offset(app.consumer, tp) or 0
        return next_offset >= highwater

    async def run(self, stream: Any) -> None:
        self.stream = stream
        async for event in stream.events():
            raw: bytes = event.value if isinstance(event.value, bytes) else \
                bytes(event.value or b"")
            message = event.message
            if not await self.offsets.take(message):
                continue  # fetched before a rebalance, skipped or taken already
            async with self.lock:
                try:
                    parsed = self.parse(raw)
                except (ValidationError, ValueError) as exc:
                    await dead_letter(self.dlq, message, raw, f"undecodable: {exc}",
                                      "detection", self.agent)
                    self.merge.skip(message.partition, message.offset, event)
                else:
                    self.merge.add(Held(self.at(parsed), str(parsed.event_id),
                                        message.partition, message.offset, parsed, event))
                await self._release()

    async def release(self) -> None:
        """Handle what became ready without a new message (a partition caught up), and
        flush what is held."""
        if (len(self.merge) or self.unacked) and self.stream is not None:
            async with self.lock:
                await self._release(flush=True)

    async def _release(self, flush: bool = False) -> None:
        epoch = self.epoch
        for held in self.merge.ready(self.partitions(), self.caught_up):
            event = held.event
            if held.item is not None:
                bind_current_event(event)  # table writes and sends belong to it
                raw = event.value if isinstance(event.value, bytes) else \
                    bytes(event.value or b"")
                await handle_with_retries(event.message, raw, held.item, service="detection",
                                          agent=self.agent, handle=self._handle(held),
                                          dlq=self.dlq)
                if self.epoch != epoch:
                    # a rebalance while it was handled: what it wrote since `forget` goes
                    # too (the rest of `ready` was of the old assignment)
                    self.forget_batch()
                    return
                self.last[held.partition] = (held.at, held.tiebreak)
            if event is not None:
                self.unacked.append(event)
        if self.unacked and (flush or len(self.unacked) >= FLUSH_EVERY):
            await self._flush()

    def _handle(self, held: Held) -> Callable[[Any], Awaitable[None]]:
        async def handle(parsed: Any) -> None:
            await self.handle(parsed, held.partition, held.offset)
        return handle

    async def _flush(self) -> None:
        """The held table writes, each to its own message's changelog partition, then,
        once the broker has them, the acknowledgements (in offset order per partition: the
        merge gives each partition's messages so)."""
        sent = [await write_table(table.table, key, value, partition)
                for table in self.own for key, value, partition in table.take()]
        await asyncio.gather(*sent)
        for event in self.unacked:
            await self.stream.ack(event)
        self.unacked.clear()

    def forget_batch(self) -> None:
        for table in self.own:
            table.forget()
        self.unacked.clear()

    def forget(self, revoked: set[TP]) -> None:
        """A rebalance: what is held of the revoked partitions is dropped, and so is the
        batch not yet flushed (of any partition: after the rebalance every partition is
        read again from its committed offset)."""
        partitions = {tp.partition for tp in revoked if tp.topic == self.topic}
        partitions |= {event.message.partition for event in self.unacked}
        self.merge.forget(partitions)
        self.offsets.forget(partitions)
        for p in partitions:
            self.last.pop(p, None)
        self.epoch += 1
        self._partitions = None
        self.forget_batch()
