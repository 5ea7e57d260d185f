"""Live updates: `GET /stream`, Server-Sent Events fed by the read model.

The dashboard worker adds a row to `dashboard_changes` for each signal, alert change
(delivery counts included), result, report and referral it applies. Each web process runs
one `ChangeHub`: a task that reads the rows after the last one it saw every
LOOKOUT_DASHBOARD_STREAM_POLL_SECONDS (one primary-key range read, however many pages are
open) and hands them to every connected stream. A stream that reconnects with
`Last-Event-ID` first gets what it missed, from the table. Pages fall back to polling when
the stream is down (static/live.js).

Event names: `signal`, `alert` (also delivery counts: data.kind == "deliveries"), `result`,
`report`, `referral`, `change` (the read model was rebuilt: reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select

from services.dashboard.models import Change
from services.dashboard.security import Redirect, signed_in
from shared.db import session_scope
from shared.problems import ProblemError
from shared.settings import Settings
from shared.web import settings_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

HEARTBEAT_SECONDS = 15.0  # a comment line keeps proxies from closing an idle stream
QUEUE_SIZE = 10_000  # a stream this far behind is closed; the browser reconnects
PAGE = 1000
EVENT_NAMES = {"signal": "signal", "alert": "alert", "deliveries": "alert", "result": "result",
               "report": "report", "referral": "referral"}


def signed_in_official(request: Request) -> Any:
    """The stream is for signed-in officials only: the session cookie is checked as for a
    page, but without one the answer is a 401 (an EventSource follows no login redirect).
    The session is its own, closed at once: a stream stays open for hours."""
    settings = settings_of(request)
    with session_scope(settings.sqlalchemy_url) as session:
        try:
            return signed_in(request, session, settings)
        except Redirect as exc:
            raise ProblemError(401, "Unauthorized", "Sign in to the dashboard first.") from exc


Official = Annotated[Any, Depends(signed_in_official)]


def changes_after(url: str, after: int, limit: int = PAGE) -> list[tuple[int, str, str]]:
    with session_scope(url) as session:
        rows = session.execute(select(Change.id, Change.kind, Change.data)
                               .where(Change.id > after).order_by(Change.id).limit(limit))
        return [(r[0], r[1], r[2]) for r in rows]


def last_change_id(url: str) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.max(Change.id))) or 0)


class ChangeHub:
    """One poller of the change log per process, fanning rows out to the open streams."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.sqlalchemy_url
        self.interval = settings.dashboard_stream_poll_seconds
        self.last_id: int | None = None
        self.queues: set[asyncio.Queue[tuple[int, str, str] | None]] = set()
        self.task: asyncio.Task[None] | None = None

    async def subscribe(self) -> tuple[asyncio.Queue[tuple[int, str, str] | None], int]:
        """A queue of the changes after the returned id (from now on)."""
        if self.task is None or self.task.done():  # no stream open: start from now
            self.last_id = await asyncio.to_thread(last_change_id, self.url)
        queue: asyncio.Queue[tuple[int, str, str] | None] = asyncio.Queue(QUEUE_SIZE)
        self.queues.add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return queue, self.last_id or 0

    def unsubscribe(self, queue: asyncio.Queue[tuple[int, str, str] | None]) -> None:
        self.queues.discard(queue)

    async def _run(self) -> None:
        while self.queues:
            try:
                rows = await asyncio.to_thread(changes_after, self.url, self.last_id or 0)
            except Exception:
                log.exception("stream: reading the change log failed; trying again")
                rows = []
            for row in rows:
                for queue in list(self.queues):
                    try:
                        queue.put_nowait(row)
                    except asyncio.QueueFull:  # a stalled client: close it, it reconnects
                        self.queues.discard(queue)
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.get_nowait()
                            queue.put_nowait(None)
            if rows:
                self.last_id = rows[-1][0]
            if len(rows) < PAGE:
                await asyncio.sleep(self.interval)


Subscribed = tuple["asyncio.Queue[tuple[int, str, str] | None]", int]


def hub_of(request: Request) -> ChangeHub:
    state = request.app.state
    if getattr(state, "change_hub", None) is None:
        state.change_hub = ChangeHub(settings_of(request))
    hub: ChangeHub = state.change_hub
    return hub


def sse(row: tuple[int, str, str]) -> bytes:
    change_id, kind, data = row
    return f"id: {change_id}\nevent: {EVENT_NAMES.get(kind, 'change')}\ndata: {data}\n\n" \
        .encode()


async def _events(request: Request, hub: ChangeHub, subscribed: Subscribed,
                  after: int | None) -> AsyncIterator[bytes]:
    queue, live_from = subscribed
    try:
        yield b"retry: 2000\n\n"
        if after is not None and after < live_from:  # what the client missed
            while rows := await asyncio.to_thread(changes_after, hub.url, after):
                rows = [r for r in rows if r[0] <= live_from]
                for row in rows:
                    yield sse(row)
                if not rows or rows[-1][0] >= live_from:
                    break
                after = rows[-1][0]
        while not await request.is_disconnected():
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            items = [item]
            while not queue.empty():  # everything waiting goes out as one write
                items.append(queue.get_nowait())
            chunk = b"".join(sse(i) for i in items
                             if i is not None and (after is None or i[0] > after))
            if chunk:
                yield chunk
            if None in items:  # the hub dropped this stream (too far behind)
                return
    finally:
        hub.unsubscribe(queue)


@router.get("/stream", response_class=StreamingResponse)
async def stream(request: Request, official: Official,
                 last_event_id: Annotated[str | None, Header()] = None,
                 after: Annotated[int | None, Query(ge=0)] = None) -> StreamingResponse:
    """Server-Sent Events: new signals, alert changes and delivery counts as the read model
    takes them in. Reconnecting with `Last-Event-ID` (or `?after=`) resumes after it."""
    resume = after
    if last_event_id and last_event_id.isdigit():
        resume = int(last_event_id)
    hub = hub_of(request)
    # subscribed before the headers go out: a change made once the client has them is sent
    subscribed = await hub.subscribe()
    return StreamingResponse(_events(request, hub, subscribed, resume),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def parse_event(block: str) -> dict[str, Any]:
    """One SSE block (`id:`, `event:`, `data:` lines) as a dict: for tests and benchmarks."""
    out: dict[str, Any] = {}
    for line in block.splitlines():
        name, _, value = line.partition(": ")
        if name in ("id", "event"):
            out[name] = value
        elif name == "data":
            out["data"] = json.loads(value)
    return out
