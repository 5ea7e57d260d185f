"""Sites and their API keys: authentication (with a short per-process cache) and the admin
operations; every key change is announced on `sites.keys.v1`."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import repository
from services.ingest.models import ApiKey, OutboxMessage, Site
from services.ingest.service.common import PRODUCER, Caller
from shared.crypto import hash_api_key, new_api_key
from shared.db import utcnow
from shared.events import SiteKeyChangedV1
from shared.outbox import outbox_row
from shared.problems import ProblemError
from shared.topics import SITE_KEYS

# Valid keys seen recently, by hash: saves a query per request. A revocation or rotation in
# this process drops its entry at once; other processes see it within KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 2.0
_key_cache: dict[str, tuple[float, Caller]] = {}


def cached_caller(api_key: str, scope: str | None) -> Caller | None:
    """The caller behind an API key if this process checked the key recently, else None
    (then `authenticate` asks the database). Needs no session: the hot path's auth."""
    cached = _key_cache.get(hash_api_key(api_key))
    if cached is None or cached[0] <= time.monotonic():
        return None
    return _in_scope(cached[1], scope)


def _in_scope(caller: Caller, scope: str | None) -> Caller:
    if scope is not None and scope not in caller.scopes:
        raise ProblemError(403, "Forbidden", f"This API key lacks the {scope!r} scope.")
    return caller


def authenticate(session: Session, api_key: str, scope: str | None) -> Caller:
    """The caller behind an API key; `scope` None: any valid key will do."""
    key_hash = hash_api_key(api_key)
    cached = _key_cache.get(key_hash)
    if cached is not None and cached[0] > time.monotonic():
        caller = cached[1]
    else:
        row = repository.active_key(session, key_hash)
        if row is None:
            _key_cache.pop(key_hash, None)
            raise ProblemError(401, "Unauthorized", "Unknown or revoked API key.",
                               headers={"WWW-Authenticate": "Bearer"})
        key_id, site_id, scopes = row
        caller = Caller(site_id, tuple(scopes), key_id)
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[key_hash] = (time.monotonic() + KEY_CACHE_SECONDS, caller)
    return _in_scope(caller, scope)


def create_site(session: Session, name: str, scopes: list[str],
                api_key: str | None = None) -> tuple[Site, str]:
    """A new site and its first API key (returned in clear once, stored hashed)."""
    site = Site(name=name)
    try:
        with session.begin_nested():
            session.add(site)
            session.flush()
    except IntegrityError as exc:
        raise ProblemError(409, "Conflict", f"A site named {name!r} exists already.") from exc
    key = api_key or new_api_key()
    row = ApiKey(site_id=site.id, key_hash=hash_api_key(key), prefix=key[:8], scopes=scopes)
    session.add(row)
    session.flush()
    _announce_key(session, row, site.name)
    return site, key


def announce_all_keys(session: Session) -> int:
    """Announce every key again, revoked ones included, with its site's name: for a database
    whose keys were made before every key was announced (the dashboard learns the names of
    those sites; the referrals replica and the dashboard take a key's event again as it is).
    Returns how many were announced."""
    count = 0
    for site in repository.all_sites(session):
        for row in repository.keys_of_site(session, site.id):
            _announce_key(session, row, site.name)
            count += 1
    return count


def list_sites(session: Session) -> list[tuple[Site, int]]:
    return repository.sites_with_active_keys(session)


def _site_or_404(session: Session, site_id: uuid.UUID) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise ProblemError(404, "Not found", "No such site.")
    return site


def list_keys(session: Session, site_id: uuid.UUID) -> list[ApiKey]:
    _site_or_404(session, site_id)
    return repository.keys_of_site(session, site_id)


def add_key(session: Session, site_id: uuid.UUID, scopes: list[str]) -> tuple[ApiKey, str]:
    site = _site_or_404(session, site_id)
    key = new_api_key()
    row = ApiKey(site_id=site_id, key_hash=hash_api_key(key), prefix=key[:8], scopes=scopes,
                 created_at=utcnow())
    session.add(row)
    session.flush()
    _announce_key(session, row, site.name)
    return row, key


def _forget_key(session: Session, key_hash: str) -> None:
    """Drop a revoked key from this process's cache now and again once the revocation is
    committed: a request checked in between would have cached it from the old row."""
    _key_cache.pop(key_hash, None)
    event.listen(session, "after_commit", lambda _s: _key_cache.pop(key_hash, None),
                 once=True)


def _key_or_404(session: Session, site_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or row.site_id != site_id:
        raise ProblemError(404, "Not found", "No such key for this site.")
    return row


def revoke_key(session: Session, site_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    row = _key_or_404(session, site_id, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        _announce_key(session, row, _site_or_404(session, site_id).name)
    _forget_key(session, row.key_hash)
    session.flush()
    return row


def rotate_key(session: Session, site_id: uuid.UUID,
               key_id: uuid.UUID) -> tuple[ApiKey, str]:
    """A new key with the same scopes; the old one is revoked at once."""
    old = _key_or_404(session, site_id, key_id)
    if old.revoked_at is not None:
        raise ProblemError(409, "Conflict", "That key is already revoked; add a new key.")
    old.revoked_at = utcnow()
    _announce_key(session, old, _site_or_404(session, site_id).name)
    _forget_key(session, old.key_hash)
    return add_key(session, site_id, list(old.scopes))


# Every key's creation and revocation is announced on `sites.keys.v1` (in the change's
# transaction, through the outbox), with its site's name: the referrals service keeps the
# keys with its scope to check them in a replica of its own, the dashboard every site's name.
def _announce_key(session: Session, row: ApiKey, site_name: str) -> None:
    event = SiteKeyChangedV1(
        producer=PRODUCER, key_id=row.id, site_id=row.site_id, site_name=site_name,
        key_hash=row.key_hash, scopes=list(row.scopes), created_at=row.created_at,
        revoked_at=row.revoked_at, occurred_at=utcnow())
    session.add(outbox_row(OutboxMessage, SITE_KEYS, str(row.id), event))
