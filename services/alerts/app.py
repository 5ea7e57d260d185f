"""The alerts Faust app (the worker process); the HTTP API is `services.alerts.api`."""

from __future__ import annotations

from shared.settings import get_settings
from shared.streams import make_faust_app

_settings = get_settings()
# Faust's consumer here reads only quiet topics (signals, SMS requests; the jobs have their
# own consumer, see agents.py): polling them at the default short wait took a noticeable
# share of the worker's CPU during a fan-out (docs/performance.md). A signal waits at most
# the longer fetch wait more to become an alert.
app = make_faust_app("alerts", _settings.model_copy(update={
    "stream_fetch_max_wait_ms": max(_settings.stream_fetch_max_wait_ms, 200)}))
