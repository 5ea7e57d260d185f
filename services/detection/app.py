"""The detection Faust app: topics and agents live in `agents`."""

from __future__ import annotations

from shared.settings import get_settings
from shared.streams import make_faust_app

app = make_faust_app("detection", get_settings())
