"""The referrals service: a placeholder with health and metrics until its issue lands."""

from __future__ import annotations

from shared.web import create_app

app = create_app("referrals", title="Lookout referrals",
                 description="Not built yet: health and metrics only.")
