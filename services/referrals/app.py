"""The referrals Faust app (the `referrals-worker` process); the HTTP API is
`services.referrals.api`."""

from __future__ import annotations

from shared.settings import get_settings
from shared.streams import make_faust_app

app = make_faust_app("referrals", get_settings())
