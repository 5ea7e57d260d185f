"""Officials' accounts, sessions, CSRF, TOTP and the review actions (signed credential to alerts)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
