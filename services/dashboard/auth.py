"""Officials' accounts, sessions, CSRF, TOTP, and review actions sent to alerts signed."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
