"""Live updates: the Server-Sent Events stream fed by the read model."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
