"""GET /stream: Server-Sent Events from the read model's change log, for officials only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.dashboard import accounts, sessions, stream
from services.dashboard.api import app
from services.dashboard.consumer import apply_batch
from services.dashboard.security import SESSION_COOKIE
from shared.db import session_scope
from shared.settings import Settings, get_settings
from tests.browser import served_app
from tests.dashboard.events import records, story


def read_events(response: httpx.Response, count: int) -> Iterator[dict[str, object]]:
    """The next `count` SSE events (comments and the retry line skipped)."""
    block: list[str] = []
    for line in response.iter_lines():
        if line:
            block.append(line)
            continue
        event = stream.parse_event("\n".join(block))
        block = []
        if "event" in event:
            yield event
            count -= 1
            if count == 0:
                return


@pytest.fixture
def base_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    settings = Settings(env="test", database_url=db_url, var_dir=tmp_path / "var",
                        dashboard_stream_poll_seconds=0.05)
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.change_hub = None
    with served_app(app) as base:
        yield base
    app.dependency_overrides.clear()
    app.state.change_hub = None


def test_the_stream_requires_a_signed_in_official(base_url: str, db_url: str,
                                                  tmp_path: Path) -> None:
    assert httpx.get(f"{base_url}/stream", timeout=10).status_code == 401
    forged = httpx.get(f"{base_url}/stream", timeout=10,
                       cookies={SESSION_COOKIE: "not-a-session"})
    assert forged.status_code == 401
    settings = Settings(env="test", database_url=db_url, var_dir=tmp_path / "var")
    with session_scope(db_url) as session:
        new = accounts.create(session, settings, "ann", "viewer", "*", with_password=True)
        token = sessions.start_session(session, settings, new.account, True).token
    with httpx.stream("GET", f"{base_url}/stream", timeout=20,
                      cookies={SESSION_COOKIE: token}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


def test_new_signals_and_alert_changes_arrive_and_a_reconnect_resumes(
    base_url: str, db_url: str,
) -> None:
    app.dependency_overrides[stream.signed_in_official] = lambda: "official"
    items = records(story())
    apply_batch(db_url, items[:10])  # before anyone listens: not sent to a new stream
    signals = [e.event_id for _r, e in items if _r.topic == "signals.v1"]  # type: ignore[attr-defined]
    with httpx.stream("GET", f"{base_url}/stream", timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        apply_batch(db_url, items[10:])
        got = list(read_events(response, len(items) - 10 - 1))  # the site key makes none
    kinds = [e["event"] for e in got]
    assert kinds.count("signal") == 3 and "alert" in kinds and "referral" in kinds
    sent = [e["data"]["id"] for e in got if e["event"] == "signal"]  # type: ignore[index]
    assert sent == [str(s) for s in signals]
    deliveries = [e for e in got if e["data"]["kind"] == "deliveries"]  # type: ignore[index]
    assert deliveries[0]["event"] == "alert"
    assert deliveries[0]["data"]["deliveries"] == {"pending": 30, "queued": 10}  # type: ignore[index]
    ids = [int(str(e["id"])) for e in got]
    assert ids == sorted(ids)
    # Reconnecting after the fifth-to-last event: the four after it, from the table.
    with httpx.stream("GET", f"{base_url}/stream", timeout=20,
                      headers={"Last-Event-ID": str(ids[-5])}) as response:
        again = list(read_events(response, 4))
    assert [int(str(e["id"])) for e in again] == ids[-4:]
