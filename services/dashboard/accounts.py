"""Officials' accounts: create (a one-time setup link), list, disable, passwords (Argon2
via pwdlib), TOTP second factor (pyotp), login with throttling and lockout (its sessions in
`sessions`), and the dashboard's audit log.

Functions take a session and never commit: the caller's unit of work does.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pyotp
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.dashboard.account_models import DashboardAudit, DashboardSession, OfficialAccount
from services.dashboard.sessions import (
    NewSession,
    end_session,
    rotate_session,
    start_session,
    token_hash,
)
from shared.crypto import derive_key
from shared.db import utcnow
from shared.officials import ROLES, Official, in_regions
from shared.problems import ProblemError
from shared.settings import Settings

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
RESERVED_NAMES = frozenset({"system", "admin-token", "policy", "unknown"})
MIN_PASSWORD_LENGTH = 12
TOTP_ISSUER = "Lookout"


@cache
def _hasher(cheap: bool) -> PasswordHash:
    if cheap:  # the test suite's: Argon2id all the same, with the lowest costs
        return PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192, parallelism=1),))
    return PasswordHash.recommended()  # Argon2id, t=3, m=64 MiB, p=4


def password_hasher(settings: Settings | None = None) -> PasswordHash:
    """Argon2id. Under LOOKOUT_ENV=test with cheap costs (a hash costs ~2 s on a loaded
    2-core machine at the recommended ones); any hash verifies whatever the costs, which it
    carries."""
    return _hasher(settings is not None and settings.env == "test")


def _totp_fernet(settings: Settings) -> Any:
    import base64

    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(derive_key(settings.secret_key, "totp-secrets")))


def dashboard_url(settings: Settings) -> str:
    return (settings.dashboard_public_url or settings.service_url(settings.dashboard_port)
            ).rstrip("/")


def audit(session: Session, actor: str, action: str, outcome: str = "ok", *,
          official_id: uuid.UUID | None = None, target: str | None = None,
          client: str | None = None, **detail: Any) -> None:
    session.add(DashboardAudit(at=utcnow(), official_id=official_id, actor=actor[:120],
                               action=action, target=(target or None) and target[:200],
                               outcome=outcome, client=client, detail=detail or None))


def totp_required(settings: Settings, account: OfficialAccount) -> bool:
    """Reviewers and admins need a second factor in prod (or as the setting says)."""
    required = settings.env == "prod" if settings.dashboard_totp_required is None \
        else settings.dashboard_totp_required
    return required and account.role in ("reviewer", "admin")


def official_of(account: OfficialAccount) -> Official:
    return Official(id=str(account.id), name=account.name, role=account.role,
                    regions=tuple(account.regions))


# ---- accounts ---------------------------------------------------------------------------------

def parse_regions(raw: str | list[str]) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    regions = [r.strip().strip("/").lower() for r in items if r.strip().strip("/")]
    if not regions:
        raise ProblemError(422, "Regions required", "Give at least one region prefix "
                           "(e.g. us/wa, or * for every region).", field="regions")
    bad = [r for r in regions if r != "*" and not re.fullmatch(r"[a-z0-9][a-z0-9/_.-]*", r)]
    if bad:
        raise ProblemError(422, "Invalid region", f"Not a region prefix: {', '.join(bad)}.",
                           field="regions")
    return regions


@dataclass(frozen=True)
class NewAccount:
    account: OfficialAccount
    setup_url: str | None  # the one-time link (None when a password was set)
    password: str | None  # the generated password (when asked for one)


def create(session: Session, settings: Settings, name: str, role: str,
           regions: str | list[str], *, with_password: bool = False) -> NewAccount:
    """A new account with a one-time setup link (or, `with_password`, a generated
    password), shown once: only hashes are kept."""
    name = name.strip().lower()
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
        raise ProblemError(422, "Invalid name", "2-64 characters: a-z, 0-9, '.', '_' or '-' "
                           "(not a reserved name).", field="name")
    if role not in ROLES:
        raise ProblemError(422, "Invalid role", f"Roles: {', '.join(ROLES)}.", field="role")
    if session.scalar(select(OfficialAccount.id).where(OfficialAccount.name == name)):
        raise ProblemError(409, "Name taken", f"An account named {name!r} exists.",
                           field="name")
    account = OfficialAccount(name=name, role=role, regions=parse_regions(regions),
                              failed_logins=0, created_at=utcnow())
    setup_url = password = None
    if with_password:
        password = secrets.token_urlsafe(15)
        account.password_hash = password_hasher(settings).hash(password)
    else:
        token = secrets.token_urlsafe(32)
        account.setup_token_hash = token_hash(token)
        account.setup_expires_at = utcnow() + timedelta(hours=settings.dashboard_setup_link_hours)
        setup_url = f"{dashboard_url(settings)}/setup/{token}"
    session.add(account)
    session.flush()
    return NewAccount(account, setup_url, password)


def by_name(session: Session, name: str) -> OfficialAccount | None:
    return session.scalar(select(OfficialAccount).where(
        OfficialAccount.name == name.strip().lower()))


def list_accounts(session: Session) -> list[OfficialAccount]:
    return list(session.scalars(select(OfficialAccount).order_by(OfficialAccount.name)))


def disable(session: Session, name: str) -> OfficialAccount:
    """Disable an account: it can no longer sign in and its sessions end at once."""
    account = by_name(session, name)
    if account is None:
        raise ProblemError(404, "Not found", f"No account named {name!r}.")
    now = utcnow()
    account.disabled_at = account.disabled_at or now
    session.execute(update(DashboardSession).where(
        DashboardSession.official_id == account.id, DashboardSession.ended_at.is_(None))
        .values(ended_at=now))
    return account


def account_for_setup(session: Session, token: str) -> OfficialAccount:
    account = session.scalar(select(OfficialAccount).where(
        OfficialAccount.setup_token_hash == token_hash(token)))
    if account is None or account.disabled_at is not None or \
            account.setup_expires_at is None or account.setup_expires_at <= utcnow():
        raise ProblemError(404, "Not found", "This setup link is unknown, used or expired.")
    return account


def check_password_strength(password: str, name: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ProblemError(422, "Password too short",
                           f"At least {MIN_PASSWORD_LENGTH} characters.", field="password")
    if name in password.lower():
        raise ProblemError(422, "Weak password", "The password contains the account name.",
                           field="password")


def set_password(settings: Settings, account: OfficialAccount, password: str) -> None:
    check_password_strength(password, account.name)
    account.password_hash = password_hasher(settings).hash(password)
    account.setup_token_hash = None
    account.setup_expires_at = None
    account.failed_logins = 0
    account.locked_until = None


# ---- TOTP -------------------------------------------------------------------------------------

def new_totp_secret(settings: Settings, account: OfficialAccount) -> str:
    """A fresh secret for enrolment (enabled only once a code from it is confirmed)."""
    secret = pyotp.random_base32()
    account.totp_secret_encrypted = _totp_fernet(settings).encrypt(secret.encode()).decode()
    account.totp_enabled = False
    account.totp_last_step = None
    return secret


def totp_secret(settings: Settings, account: OfficialAccount) -> str | None:
    if not account.totp_secret_encrypted:
        return None
    return str(_totp_fernet(settings).decrypt(account.totp_secret_encrypted.encode()).decode())


def totp_uri(secret: str, name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)


def check_totp(settings: Settings, account: OfficialAccount, code: str,
               at: datetime | None = None) -> bool:
    """The code of the current 30-s step (or the one before or after), each step's code
    accepted once."""
    secret = totp_secret(settings, account)
    code = code.strip().replace(" ", "")
    if secret is None or not re.fullmatch(r"\d{6}", code):
        return False
    totp = pyotp.TOTP(secret)
    now = at or utcnow()
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if secrets.compare_digest(totp.at(candidate * totp.interval), code):
            if account.totp_last_step is not None and candidate <= account.totp_last_step:
                return False  # replayed
            account.totp_last_step = candidate
            return True
    return False


# ---- login and sessions -----------------------------------------------------------------------

class LoginRefused(Exception):
    def __init__(self, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class LockedOut(LoginRefused):
    """Refused, and the account is locked (after the second factor: its session ended)."""


def typed_name(name: str) -> str:
    """The name as typed into the login form, as the audit log records it."""
    return name.strip().lower()[:64] or "(empty)"


def refuse_login(session: Session, name: str, client: str, reason: str, detail: str,
                 status: int) -> LoginRefused:
    """A refusal before the password is checked (stale form, throttled), audited."""
    audit(session, typed_name(name), "login", "refused", client=client, reason=reason)
    return LoginRefused(detail, status)


def _count_failure(settings: Settings, account: OfficialAccount, now: datetime) -> bool:
    """One more failed attempt in a row; True when it locks the account."""
    account.failed_logins += 1
    if account.failed_logins < settings.dashboard_login_max_failures:
        return False
    account.locked_until = now + timedelta(minutes=settings.dashboard_lockout_minutes)
    account.failed_logins = 0
    return True


# Verified against when the name is unknown, so that a wrong name costs what a wrong
# password does (no account enumeration by timing).
@cache
def _dummy_hash(settings_env: str) -> str:
    return _hasher(settings_env == "test").hash(secrets.token_urlsafe(16))


def authenticate(session: Session, settings: Settings, name: str, password: str,
                 client: str | None) -> OfficialAccount:
    """The account whose name and password these are; LoginRefused otherwise (counted:
    past LOOKOUT_DASHBOARD_LOGIN_MAX_FAILURES in a row the account is locked for
    LOOKOUT_DASHBOARD_LOCKOUT_MINUTES). Every attempt is audited."""
    account = by_name(session, name)
    now = utcnow()
    if account is None or account.password_hash is None:
        password_hasher(settings).verify(password, _dummy_hash(settings.env))
        audit(session, typed_name(name), "login", "failed", client=client, reason="unknown account")
        raise LoginRefused("Wrong name or password.")
    if account.disabled_at is not None:
        audit(session, account.name, "login", "refused", official_id=account.id,
              client=client, reason="disabled")
        raise LoginRefused("Wrong name or password.")
    if account.locked_until is not None and account.locked_until > now:
        audit(session, account.name, "login", "refused", official_id=account.id,
              client=client, reason="locked")
        minutes = max(1, round((account.locked_until - now).total_seconds() / 60))
        raise LockedOut(f"Too many failed attempts: the account is locked for about "
                        f"{minutes} more minute(s).", status=429)
    if not password_hasher(settings).verify(password, account.password_hash):
        locked = _count_failure(settings, account, now)
        audit(session, account.name, "login", "failed", official_id=account.id,
              client=client, reason="wrong password; locked" if locked else "wrong password")
        if account.locked_until is not None and account.locked_until > now:
            raise LockedOut("Too many failed attempts: the account is locked for "
                            f"{settings.dashboard_lockout_minutes:g} minutes.", status=429)
        raise LoginRefused("Wrong name or password.")
    account.failed_logins = 0
    account.locked_until = None
    return account


def sign_in(session: Session, settings: Settings, name: str, password: str,
            client: str) -> NewSession:
    """The password step: a new session, its second factor still to come when the account
    has TOTP on (LoginRefused as `authenticate` says). Audited."""
    account = authenticate(session, settings, name, password, client)
    second_factor_ok = not account.totp_enabled
    new = start_session(session, settings, account, second_factor_ok)
    if second_factor_ok:
        account.last_login_at = new.row.created_at
        audit(session, account.name, "login", official_id=account.id, client=client,
              second_factor="none")
    else:
        audit(session, account.name, "login_password", official_id=account.id,
              client=client)
    return new


def confirm_second_factor(session: Session, settings: Settings, row: DashboardSession,
                          account: OfficialAccount, code: str, client: str) -> NewSession:
    """The TOTP step: a right code gives a new session with the second factor settled. A
    wrong one is a failed login (LoginRefused); the one that locks the account ends the
    session too (LockedOut). Audited."""
    if check_totp(settings, account, code):
        account.failed_logins = 0
        new = rotate_session(session, settings, row, account)
        account.last_login_at = new.row.created_at
        audit(session, account.name, "login", official_id=account.id, client=client,
              second_factor="totp")
        return new
    if _count_failure(settings, account, utcnow()):
        end_session(session, row)
        audit(session, account.name, "login_totp", "failed", official_id=account.id,
              client=client, reason="wrong code; locked")
        raise LockedOut("That code is not right.")
    audit(session, account.name, "login_totp", "failed", official_id=account.id,
          client=client, reason="wrong code")
    raise LoginRefused("That code is not right.")


def can_review(official: Official, region_id: str) -> bool:
    return official.has_role("reviewer") and in_regions(region_id, official.regions)

