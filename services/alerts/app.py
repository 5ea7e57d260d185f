"""The alerts Faust app (the worker process); the HTTP API is `services.alerts.api`."""

from __future__ import annotations

from shared.settings import get_settings
from shared.streams import make_faust_app

app = make_faust_app("alerts", get_settings())
