"""The dashboard service: a placeholder with health and metrics until its issue lands."""

from __future__ import annotations

from shared.web import create_app

app = create_app("dashboard", title="Lookout dashboard",
                 description="Not built yet: health and metrics only.")
