"""Group commit: one writer per process and database stores the work of many requests in
one transaction (ingest's submissions, alerts' Twilio status callbacks).

Why: a commit, and handing work to a thread, cost far more than storing one result. Under
load the HTTP handlers (async, on the event loop) validate their request and queue a unit of
work here; the writer takes *everything* queued, runs each unit in its own savepoint inside
one transaction on its own thread, commits once, and only then tells each request how its
unit went. So 32 concurrent single-result POSTs cost one commit and one thread hop, not 32
of each, while each request keeps the semantics of its own transaction:

- a unit sees the units before it in the same group (a second request with the same sample
  id is a duplicate or a 409, exactly as if it had come after the first commit);
- a unit that raises (e.g. a `ProblemError`) rolls back its savepoint alone and its request
  gets the exception; the others go on;
- a request is answered only after the commit: if the commit fails, every request of the
  group gets the error (500) and nothing of the group is stored, so nothing answered 202 is
  ever lost.

When the writer is idle a unit is taken at once (no waiting to fill a group): groups form by
themselves while a commit is in progress.

The write lock (one writer at a time across processes on SQLite) is the resource
every request waits for, so a unit may do its reads first (`lookup`, e.g. which sample ids
the site has already sent), from committed data before the lock is taken; what another
process commits in between is caught by the database's unique keys, and the unit's `store`
then falls back to reading inside the lock.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared.db import checkpoint_soon, get_sessionmaker, session_scope, write_lock

Lookup = Callable[[Session, Sequence[Any]], Any]
Store = Callable[[Session, Sequence[Any], Any], list[Any]]  # (session, items, looked up)

_thread = ThreadPoolExecutor(1, thread_name_prefix="group-writer")
# `lookout serve ingest` shortens the switch interval for this thread (services/tuning.py).


@dataclass(eq=False)  # hashed by identity
class _Job:
    merge_key: Hashable | None
    items: Sequence[Any]
    store: Store
    lookup: Lookup | None
    future: asyncio.Future[list[Any]]


class GroupWriter:
    """The group-commit writer of one event loop and one database; `max_group`: at most so
    many requests in one transaction (None: everything queued)."""

    def __init__(self, url: str, max_group: int | None = None) -> None:
        self.url = url
        self.max_group = max_group
        self._queue: list[_Job] = []
        self._drain_task: asyncio.Task[None] | None = None

    async def store(self, items: Sequence[Any], store: Store,
                    merge_key: Hashable | None = None, lookup: Lookup | None = None
                    ) -> list[Any]:
        """`store(session, items, lookup(read_session, items))` in the next group (`lookup`
        runs before the write lock, on committed data; without one `store` gets None): one
        outcome per item, once the group has committed. Requests with the same (not None)
        `merge_key` in one group are stored by one call of `store` with their items one
        after the other (in arrival order), so 32 single results of a site cost one query
        and one bulk insert; `store` must then treat each item as if it came after the
        ones before it."""
        loop = asyncio.get_running_loop()
        job = _Job(merge_key, items, store, lookup, loop.create_future())
        self._queue.append(job)
        if self._drain_task is None:
            self._drain_task = loop.create_task(self._drain())
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                size = len(self._queue) if self.max_group is None else self.max_group
                group, self._queue = self._queue[:size], self._queue[size:]
                try:
                    outcomes = await loop.run_in_executor(_thread, self._commit, group)
                except BaseException as exc:  # cancelled, or a bug: fail the group, not hang
                    outcomes = [exc] * len(group)
                for job, outcome in zip(group, outcomes, strict=True):
                    if job.future.done():  # the request went away; what it sent stands
                        continue
                    if isinstance(outcome, BaseException):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)
        finally:
            self._drain_task = None

    def _commit(self, group: list[_Job]) -> list[list[Any] | BaseException]:
        """Runs on the writer thread: each set of merged jobs in its own savepoint, then one
        commit. Returns each job's outcomes, or the exception that failed it."""
        sets: dict[Hashable, list[_Job]] = {}
        for job in group:
            sets.setdefault(job if job.merge_key is None else job.merge_key, []).append(job)
        outcomes: dict[int, list[Any] | BaseException] = {}
        merged = [(jobs, [item for job in jobs for item in job.items])
                  for jobs in sets.values()]
        found: list[Any] = [None] * len(merged)
        if any(jobs[0].lookup is not None for jobs, _ in merged):  # reads only when asked
            try:
                with session_scope(self.url) as read:
                    found = [None if jobs[0].lookup is None else jobs[0].lookup(read, items)
                             for jobs, items in merged]
            except Exception as exc:  # the database is unreachable: nothing is stored
                return [exc] * len(group)
        # The writer engine: on SQLite the WAL checkpoint runs after the lock is let go
        # (shared.db.checkpoint_soon), not inside a commit.
        with write_lock(self.url), get_sessionmaker(self.url, writer=True)() as session:
            try:
                if self.url.startswith("sqlite"):
                    # Take SQLite's write lock first (waiting for the other processes in the
                    # busy handler): a transaction that reads and then writes would instead
                    # fail at once with "database is locked" whenever another process
                    # committed since its read.
                    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
                for (jobs, items), looked_up in zip(merged, found, strict=True):
                    try:
                        if len(merged) == 1:  # no other jobs to keep if these fail
                            stored = jobs[0].store(session, items, looked_up)
                        else:
                            with session.begin_nested():
                                stored = jobs[0].store(session, items, looked_up)
                    except Exception as exc:  # e.g. a ProblemError: these jobs alone fail
                        if len(merged) == 1:
                            session.rollback()
                            return [exc] * len(group)
                        outcomes.update((id(job), exc) for job in jobs)
                        continue
                    start = 0
                    for job in jobs:
                        outcomes[id(job)] = stored[start:start + len(job.items)]
                        start += len(job.items)
                session.commit()
            except Exception as exc:  # nothing of this group is stored
                session.rollback()
                return [exc] * len(group)
        checkpoint_soon(self.url)
        return [outcomes[id(job)] for job in group]


_Key = tuple[str, int | None]
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_Key, GroupWriter]] = (
    weakref.WeakKeyDictionary())


def writer_for(url: str, max_group: int | None = None) -> GroupWriter:
    """This event loop's writer for the database at `url` (a worker process has one loop;
    tests start a loop per client). The writers of a process share one thread."""
    by_key = _writers.setdefault(asyncio.get_running_loop(), {})
    key = (url, max_group)
    if key not in by_key:
        by_key[key] = GroupWriter(url, max_group)
    return by_key[key]
