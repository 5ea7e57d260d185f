"""Signed officials' credentials for tests of the services that verify them."""

from __future__ import annotations

import uuid

from shared.officials import Official, sign
from shared.settings import Settings


def official(name: str = "dr.ops", role: str = "reviewer",
             regions: tuple[str, ...] = ("us",)) -> Official:
    return Official(id=str(uuid.uuid5(uuid.NAMESPACE_URL, name)), name=name, role=role,
                    regions=regions)


def official_headers(settings: Settings, name: str = "dr.ops", role: str = "reviewer",
                     regions: tuple[str, ...] = ("us",), ttl: float | None = None,
                     now: float | None = None) -> dict[str, str]:
    """`Authorization: Bearer <credential>` as the dashboard would sign it for `name`."""
    token = sign(settings, official(name, role, regions), ttl=ttl, now=now)
    return {"Authorization": f"Bearer {token}"}
