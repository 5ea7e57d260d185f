"""Officials' identity between services: the review credential.

The dashboard signs a short-lived credential (a JWT signed with Ed25519, "EdDSA") for each
action an official takes on another service; that service verifies it with the dashboard's
public key and takes who acts (id, name, role, regions) from it, never from a header the
caller types. Keys: `LOOKOUT_DASHBOARD_SIGNING_KEY` (PEM, only the dashboard holds it) and
`LOOKOUT_DASHBOARD_PUBLIC_KEY` (PEM, every verifier); in dev and test, when they are unset,
one key pair is derived from `LOOKOUT_SECRET_KEY`, so the processes of one stack agree
without setup. In prod both are required (the dev pair is public).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.crypto import derive_key
from shared.settings import InsecureSettingsError, Settings

ROLES = ("viewer", "reviewer", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
ISSUER = "lookout-dashboard"
AUDIENCE = "lookout-alerts"
ALGORITHM = "EdDSA"
MAX_TTL_SECONDS = 300  # a credential meant to live longer is refused even if signed
LEEWAY_SECONDS = 5  # clocks of two hosts


class CredentialError(Exception):
    """A missing, malformed, forged, expired or insufficient credential."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def in_regions(region_id: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether `region_id` is one of the region prefixes or below one ("*": every region)."""
    return any(p == "*" or region_id == p or region_id.startswith(p.rstrip("/") + "/")
               for p in prefixes)


@dataclass(frozen=True)
class Official:
    """A verified official: the account's id and name, role and region prefixes."""

    id: str
    name: str
    role: str
    regions: tuple[str, ...]
    jti: str = ""
    expires_at: int = 0  # the credential's `exp` (Unix seconds)

    def has_role(self, role: str) -> bool:
        """Roles are ordered: an admin may do what a reviewer may, a reviewer what a viewer
        may."""
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[role]

    def covers(self, region_id: str) -> bool:
        return in_regions(region_id, self.regions)


def _pem_private(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("LOOKOUT_DASHBOARD_SIGNING_KEY is not an Ed25519 private key")
    return key


def _pem_public(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("LOOKOUT_DASHBOARD_PUBLIC_KEY is not an Ed25519 public key")
    return key


@cache
def _dev_private(secret_key: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(derive_key(secret_key, "dashboard-signing"))


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    if settings.dashboard_signing_key:
        return _pem_private(settings.dashboard_signing_key)
    if settings.env == "prod":
        raise InsecureSettingsError("LOOKOUT_DASHBOARD_SIGNING_KEY is required when "
                                    "LOOKOUT_ENV=prod (an Ed25519 private key, PEM)")
    return _dev_private(settings.secret_key)


def public_key(settings: Settings) -> Ed25519PublicKey:
    if settings.dashboard_public_key:
        return _pem_public(settings.dashboard_public_key)
    if settings.env == "prod":
        raise InsecureSettingsError("LOOKOUT_DASHBOARD_PUBLIC_KEY is required when "
                                    "LOOKOUT_ENV=prod (the dashboard's Ed25519 public key, PEM)")
    return _dev_private(settings.secret_key).public_key()


def new_key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private PEM, public PEM), for `lookout officials keys`."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def sign(settings: Settings, official: Official, ttl: float | None = None,
         now: float | None = None) -> str:
    """The credential of `official` for one request, valid `ttl` seconds (default
    LOOKOUT_DASHBOARD_CREDENTIAL_TTL_SECONDS)."""
    issued = int(now if now is not None else time.time())
    ttl = settings.dashboard_credential_ttl_seconds if ttl is None else ttl
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": official.id, "name": official.name,
        "role": official.role, "regions": list(official.regions),
        "iat": issued, "exp": issued + int(ttl), "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, signing_key(settings), algorithm=ALGORITHM)


def verify(settings: Settings, token: str) -> Official:
    """The official a credential names, once its signature, issuer, audience and times are
    checked; CredentialError(401) otherwise."""
    try:
        claims = jwt.decode(token, public_key(settings), algorithms=[ALGORITHM],
                            audience=AUDIENCE, issuer=ISSUER, leeway=LEEWAY_SECONDS,
                            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]})
    except jwt.ExpiredSignatureError as exc:
        raise CredentialError(401, "The official's credential has expired.") from exc
    except jwt.InvalidTokenError as exc:
        raise CredentialError(401, f"Not a valid official's credential ({exc}).") from exc
    if int(claims["exp"]) - int(claims["iat"]) > MAX_TTL_SECONDS:
        raise CredentialError(401, "The credential lives longer than a review credential may.")
    role, regions, name = claims.get("role"), claims.get("regions"), claims.get("name")
    if role not in ROLE_RANK or not isinstance(regions, list) or not isinstance(name, str) \
            or not all(isinstance(r, str) for r in regions) or not name:
        raise CredentialError(401, "The credential's role, name or regions are malformed.")
    return Official(id=str(claims["sub"]), name=name, role=role, regions=tuple(regions),
                    jti=str(claims["jti"]), expires_at=int(claims["exp"]))
