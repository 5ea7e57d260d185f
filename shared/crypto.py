"""Secrets at rest: phone numbers encrypted (Fernet) and found by keyed hash; API keys hashed.

Both phone keys are derived from `LOOKOUT_SECRET_KEY` with HKDF, so one secret rotates both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_PREFIX = "lk_"


def _derive(secret_key: str, purpose: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"lookout:" + purpose)
    return hkdf.derive(secret_key.encode())


def derive_key(secret_key: str, purpose: str) -> bytes:
    """32 bytes for `purpose`, derived from the secret key (HKDF-SHA256)."""
    return _derive(secret_key, purpose.encode())


@cache
def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"phone-encryption")))


def encrypt_phone(secret_key: str, e164: str) -> str:
    return _fernet(secret_key).encrypt(e164.encode()).decode()


def decrypt_phone(secret_key: str, token: str) -> str:
    return _fernet(secret_key).decrypt(token.encode()).decode()


def phone_lookup_hash(secret_key: str, e164: str) -> str:
    """A keyed hash to find a subscriber by phone without storing the number in clear."""
    key = _derive(secret_key, b"phone-lookup")
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()


def mask_phone(e164: str) -> str:
    """What a page may show of a number: its last two digits."""
    return "•" * max(len(e164) - 2, 0) + e164[-2:]


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """API keys are 256-bit random tokens, so a plain SHA-256 is enough to store them."""
    return hashlib.sha256(key.encode()).hexdigest()


def webhook_secret(secret_key: str, owner: str) -> str:
    """The secret one receiver (a provider's service id) checks our webhook signatures with,
    derived from `LOOKOUT_SECRET_KEY`, so nothing more is stored (rotating the key rotates
    every receiver's secret)."""
    return "whsec_" + _derive(secret_key, b"webhook:" + owner.encode()).hex()


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` HMAC-SHA256 of "<timestamp>.<body>" (the `Lookout-Signature` header)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()
