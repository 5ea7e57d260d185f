"""The server-rendered pages (Now, review queue, workbench, trends, drug supply, map, ...)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
