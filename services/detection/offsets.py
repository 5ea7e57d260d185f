"""Each agent handles its partitions' messages in one unbroken run of offsets from the
committed offset (the first stage holds messages and the novelty stage holds candidates
for a while, and both rely on a message not handled being delivered again).

After a rebalance faust can hand a stream messages from the position fetched before it
(between resuming the partitions and seeking them to the committed offsets), and can then
drop the messages it fetches again from the committed offset as already read. So an agent
takes a message only if it is the next offset of its partition: a later one means messages
were skipped, and the partition is sought back to the next offset (the later ones come
again); an earlier one was taken already. See shared/faust_patches.py, patches 7 to 9.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import TP

from shared.faust_patches import committed_offset

log = logging.getLogger(__name__)
SEEK_AGAIN = 0.5  # s before the same partition is sought back to the same offset again
SEEK_WAIT = 30.0  # s at most to wait for faust's seek after a rebalance
STALLED = 2.0  # s without a message of a partition that has more before it is sought back


class Contiguous:
    def __init__(self, app: Any, topic: str) -> None:
        self.app, self.topic = app, topic
        self.next: dict[int, int] = {}  # per partition: the next offset to take
        self.sought: dict[int, tuple[int, float]] = {}  # per partition: (offset, when)
        self.taken_at: dict[int, float] = {}  # per partition: when a message was last taken

    async def take(self, message: Any) -> bool:
        """Whether `message` is the next of its partition (and is to be handled now)."""
        if message.generation_id != self.app.consumer_generation_id:
            return False  # fetched before a rebalance: fetched again from the commit
        p, offset = message.partition, message.offset
        want = self.next.get(p)
        if want is None:
            await self._seeked()
            want = committed_offset(self.app.consumer, TP(self.topic, p))
            if want is None:  # nothing committed yet: the partition starts here
                want = offset
        if offset == want:
            self.next[p] = offset + 1
            self.taken_at[p] = time.monotonic()
            self.sought.pop(p, None)
            return True
        if offset > want:
            await self._seek_back(p, want)
        return False

    async def _seeked(self) -> None:
        """Wait until faust has sought this generation's partitions to their committed
        offsets (it resumes them first)."""
        consumer = self.app.consumer
        deadline = time.monotonic() + SEEK_WAIT
        while not consumer.seeked() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # (faust has no event for its seek)

    async def _seek_back(self, partition: int, offset: int) -> None:
        last = self.sought.get(partition)
        now = time.monotonic()
        if last is not None and last[0] == offset and now - last[1] < SEEK_AGAIN:
            return
        self.sought[partition] = (offset, now)
        log.info("%s[%s]: messages skipped, sought back to %s", self.topic, partition, offset)
        await self.app.consumer.seek(TP(self.topic, partition), offset)

    async def watch(self, partitions: list[int]) -> None:
        """Seek back a partition that has messages past the next offset to take, none of
        which came for `STALLED` s (faust can drop what it fetched while it resumed)."""
        consumer = self.app.consumer
        if not consumer.seeked():
            return
        now = time.monotonic()
        for p in partitions:
            tp = TP(self.topic, p)
            want = self.next.get(p, committed_offset(consumer, tp))
            highwater = _highwater(consumer, tp)
            if want is None or highwater is None or highwater <= want:
                self.taken_at[p] = now
                continue
            if now - self.taken_at.setdefault(p, now) >= STALLED:
                self.taken_at[p] = now
                await self._seek_back(p, want)

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.next.pop(p, None)
            self.sought.pop(p, None)
            self.taken_at.pop(p, None)


def _highwater(consumer: Any, tp: TP) -> int | None:
    try:
        value: int | None = consumer.highwater(tp)
    except Exception:  # not fetched yet
        return None
    return value
