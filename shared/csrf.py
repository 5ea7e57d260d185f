"""CSRF tokens for the public HTML forms (double submit): a signed, dated token in a
`SameSite=Strict` cookie and the same token in a hidden form field. Another site can make a
browser post the form, but can neither read the cookie nor send it cross-site, so a post
without both, equal and signed by us, is refused."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import Request, Response

COOKIE = "lookout_csrf"
FIELD = "csrf_token"
MAX_AGE = 12 * 3600  # seconds a token (a form left open) stays good


def _signature(secret_key: str, payload: str) -> str:
    key = hashlib.sha256(b"lookout:csrf:" + secret_key.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:32]


def _valid(secret_key: str, token: str, now: float) -> bool:
    nonce, _, rest = token.partition(".")
    issued, _, signature = rest.partition(".")
    if not nonce or not issued.isdigit() or not signature:
        return False
    if not hmac.compare_digest(signature, _signature(secret_key, f"{nonce}.{issued}")):
        return False
    return 0 <= now - int(issued) <= MAX_AGE


def token_for(request: Request, secret_key: str) -> str:
    """The request's token if its cookie holds a good one, else a new one (`set_cookie` it on
    the response)."""
    current = request.cookies.get(COOKIE, "")
    if _valid(secret_key, current, time.time()):
        return current
    nonce = f"{secrets.token_urlsafe(16)}.{int(time.time())}"
    return f"{nonce}.{_signature(secret_key, nonce)}"


def set_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(COOKIE, token, max_age=MAX_AGE, httponly=True, samesite="strict",
                        secure=secure)


def is_valid(request: Request, secret_key: str, form_token: str | None) -> bool:
    """The form's token is ours, not expired, and the one in the request's cookie."""
    cookie = request.cookies.get(COOKIE, "")
    return bool(form_token) and hmac.compare_digest(cookie, form_token or "") \
        and _valid(secret_key, cookie, time.time())
