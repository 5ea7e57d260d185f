"""Officials' accounts: the `lookout officials` commands, setup links, Argon2 passwords,
login with throttling and lockout, sessions (cookies, idle and absolute expiry), CSRF,
TOTP, the Admin page and the audit log with its CSV export."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.dashboard import accounts
from services.dashboard.account_models import DashboardAudit, DashboardSession, OfficialAccount
from services.dashboard.security import SESSION_COOKIE
from shared.db import session_scope, utcnow
from shared.settings import Settings
from tests.conftest import run_lookout
from tests.dashboard.conftest import PASSWORD, MakeOfficial, csrf_of, form_csrf, login


def _audit(settings: Settings) -> list[tuple[str, str, str]]:
    with session_scope(settings.sqlalchemy_url) as session:
        return [(a.actor, a.action, a.outcome) for a in
                session.scalars(select(DashboardAudit).order_by(DashboardAudit.id))]


def _account(settings: Settings, name: str) -> OfficialAccount:
    with session_scope(settings.sqlalchemy_url) as session:
        account = accounts.by_name(session, name)
        assert account is not None
        return account


def test_cli_create_list_disable_and_the_setup_link(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    env = {**os.environ, "LOOKOUT_ENV": "test", "LOOKOUT_DATABASE_URL": settings.sqlalchemy_url,
           "LOOKOUT_VAR_DIR": str(tmp_path / "var")}
    out = run_lookout(env, "officials", "create", "Dr.Lee", "--role", "reviewer",
                      "--regions", "us/wa,us/or")
    link = out.strip().splitlines()[-1]
    assert re.fullmatch(r"http://127\.0\.0\.1:8003/setup/[\w-]{40,}", link), out
    account = _account(settings, "dr.lee")
    assert account.role == "reviewer" and account.regions == ["us/wa", "us/or"]
    assert account.password_hash is None and account.setup_token_hash
    assert account.setup_token_hash not in link  # only its hash is kept
    password = run_lookout(env, "officials", "create", "ops", "--role", "admin", "--regions",
                           "*", "--password").strip().splitlines()[-1]
    stored = _account(settings, "ops").password_hash
    assert stored is not None and stored.startswith("$argon2id$")
    assert accounts.password_hasher(settings).verify(password, stored)

    # The link sets the password once.
    path = link.split("8003", 1)[1]
    assert client.get(path).status_code == 200
    short = client.post(path, data={"password": "short", "password2": "short"})
    assert short.status_code == 422
    ok = client.post(path, data={"password": PASSWORD, "password2": PASSWORD},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/login"
    assert client.get(path).status_code == 404  # used
    assert login(client, "dr.lee").status_code == 303

    listed = run_lookout(env, "officials", "list")
    assert re.search(r"dr\.lee\s+reviewer\s+active\s+off\s+us/wa,us/or", listed), listed
    run_lookout(env, "officials", "disable", "dr.lee")
    assert client.get("/account/totp", follow_redirects=False).status_code == 303  # ended
    assert login(client, "dr.lee").status_code == 401
    assert "disabled" in run_lookout(env, "officials", "list")
    assert ("cli", "account_create", "ok") in _audit(settings)


def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    make_official("ann")
    assert client.get("/admin", follow_redirects=False).headers["location"] == \
        "/login?next=%2Fadmin"
    response = login(client, "ann", next_="/account/totp")
    assert response.status_code == 303 and response.headers["location"] == "/account/totp"
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    with session_scope(settings.sqlalchemy_url) as session:
        stored = session.scalars(select(DashboardSession.token_hash)).all()
    assert client.cookies[SESSION_COOKIE] not in stored  # only the hash is kept
    page = client.get("/account/totp")
    assert page.status_code == 200 and 'id="whoami">ann (reviewer' in page.text
    assert client.get("/admin").status_code == 403  # a reviewer is no admin
    assert client.post("/logout", data={"csrf_token": "wrong"}).status_code == 403
    assert client.post("/logout", data={"csrf_token": form_csrf(page.text)},
                       follow_redirects=False).status_code == 303
    assert client.get("/account/totp", follow_redirects=False).status_code == 303
    assert [a[1] for a in _audit(settings)] == ["login", "logout"]


def test_secure_cookies_outside_dev_and_test(settings: Settings) -> None:
    from services.dashboard.security import secure_cookies

    assert secure_cookies(settings.model_copy(update={"env": "prod"}))
    assert not secure_cookies(settings)


def test_wrong_passwords_lock_the_account_and_every_attempt_is_audited(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    make_official("bob")
    for _ in range(settings.dashboard_login_max_failures - 1):
        assert login(client, "bob", "wrong password!").status_code == 401
    locked = login(client, "bob", "wrong password!")
    assert locked.status_code == 429 and "locked" in locked.text
    assert login(client, "bob").status_code == 429  # the right password, but locked
    assert login(client, "nobody", "whatever").status_code == 401
    audit = _audit(settings)
    assert audit.count(("bob", "login", "failed")) == settings.dashboard_login_max_failures
    assert ("bob", "login", "refused") in audit and ("nobody", "login", "failed") in audit
    with session_scope(settings.sqlalchemy_url) as session:  # the lockout ends
        account = accounts.by_name(session, "bob")
        assert account is not None and account.locked_until is not None
        account.locked_until = utcnow() - timedelta(seconds=1)
    assert login(client, "bob").status_code == 303


def test_login_attempts_are_throttled_per_client(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    fast = settings.model_copy(update={"dashboard_login_rate_per_minute": 3,
                                       "dashboard_login_max_failures": 100})
    from services.dashboard.api import app
    from shared.settings import get_settings

    app.dependency_overrides[get_settings] = lambda: fast
    make_official("cat")
    codes = [login(client, "cat", "wrong password!").status_code for _ in range(5)]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]
    assert ("cat", "login", "refused") in _audit(settings)


def test_login_without_the_form_token_is_refused(
    client: TestClient, make_official: MakeOfficial
) -> None:
    make_official("dan")
    response = client.post("/login", data={"name": "dan", "password": PASSWORD,
                                           "csrf_token": "forged"}, follow_redirects=False)
    assert response.status_code == 403 and SESSION_COOKIE not in response.cookies


def test_sessions_expire_when_idle_and_at_their_absolute_limit(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    make_official("eve")
    login(client, "eve")
    assert client.get("/account/totp").status_code == 200
    idle = timedelta(minutes=settings.dashboard_session_idle_minutes)
    with session_scope(settings.sqlalchemy_url) as session:
        row = session.scalars(select(DashboardSession)).one()
        row.last_seen_at = utcnow() - idle - timedelta(seconds=1)
    assert client.get("/account/totp", follow_redirects=False).status_code == 303
    login(client, "eve")
    assert client.get("/account/totp").status_code == 200
    with session_scope(settings.sqlalchemy_url) as session:
        last = session.scalars(select(DashboardSession)
                               .order_by(DashboardSession.created_at.desc())).first()
        assert last is not None
        last.expires_at = utcnow() - timedelta(seconds=1)  # active, but past the limit
    assert client.get("/account/totp", follow_redirects=False).status_code == 303


@pytest.fixture
def totp_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"dashboard_totp_required": True})


def test_totp_enrolment_is_required_for_reviewers_then_asked_at_login(
    client: TestClient, totp_settings: Settings, make_official: MakeOfficial
) -> None:
    from services.dashboard.api import app
    from shared.settings import get_settings

    app.dependency_overrides[get_settings] = lambda: totp_settings
    make_official("fay")
    login(client, "fay")
    assert client.get("/admin", follow_redirects=False).headers["location"] == "/account/totp"
    enrol = client.get("/account/totp")
    uri = re.search(r'id="totp-uri" href="([^"]+)"', enrol.text)
    assert uri and uri.group(1).startswith("otpauth://totp/Lookout:fay?secret=")
    assert "<svg" in enrol.text  # the QR code
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', enrol.text)
    assert secret
    totp = pyotp.TOTP(secret.group(1))
    assert client.post("/account/totp", data={"code": "000000",
                                              "csrf_token": form_csrf(enrol.text)}
                       ).status_code == 422
    assert client.post("/account/totp", data={"code": totp.now(), "csrf_token": "x"}
                       ).status_code == 403
    ok = client.post("/account/totp", data={"code": totp.now(),
                                            "csrf_token": form_csrf(enrol.text)},
                     follow_redirects=False)
    assert ok.status_code == 303
    client.cookies.clear()
    step_one = login(client, "fay")
    assert step_one.headers["location"].startswith("/login/totp")
    assert client.get("/account/totp", follow_redirects=False).headers["location"] == \
        "/login/totp"
    form = client.get("/login/totp")
    wrong = client.post("/login/totp", data={"code": "123456",
                                             "csrf_token": form_csrf(form.text)})
    assert wrong.status_code == 401
    # The code just used at enrolment is not accepted again (one use per step), the next is.
    previous = client.cookies[SESSION_COOKIE]
    at_next_step = totp.at(utcnow().timestamp() + totp.interval)
    done = client.post("/login/totp", data={"code": at_next_step,
                                            "csrf_token": form_csrf(form.text)},
                       follow_redirects=False)
    assert done.status_code == 303
    assert client.cookies[SESSION_COOKIE] != previous  # a new session id after the 2nd step
    assert client.get("/account/totp").status_code == 200
    actions = [a[1:] for a in _audit(totp_settings)]
    assert ("login_password", "ok") in actions and ("login_totp", "failed") in actions
    assert actions[-1] == ("login", "ok")


def test_wrong_second_factor_codes_lock_the_account_and_end_the_session(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    make_official("gus")
    with session_scope(settings.sqlalchemy_url) as session:
        account = accounts.by_name(session, "gus")
        assert account is not None
        secret = accounts.new_totp_secret(settings, account)
        account.totp_enabled = True
    assert login(client, "gus").headers["location"] == "/login/totp?next=/"
    token = form_csrf(client.get("/login/totp").text)
    wrong = {"code": pyotp.TOTP(secret).at(0), "csrf_token": token}  # a code of 1970
    for _ in range(settings.dashboard_login_max_failures - 1):
        assert client.post("/login/totp", data=wrong).status_code == 401
    locked = client.post("/login/totp", data=wrong, follow_redirects=False)
    assert locked.status_code == 303 and locked.headers["location"] == "/login"
    assert client.cookies.get(SESSION_COOKIE) is None
    with session_scope(settings.sqlalchemy_url) as session:
        reasons = [(a.detail or {}).get("reason") for a in session.scalars(
            select(DashboardAudit).where(DashboardAudit.action == "login_totp")
            .order_by(DashboardAudit.id))]
        ended = list(session.scalars(select(DashboardSession.ended_at)))
    assert reasons == ["wrong code"] * (settings.dashboard_login_max_failures - 1) + [
        "wrong code; locked"]
    assert ended and None not in ended
    assert login(client, "gus").status_code == 429  # the right password, but locked


def test_totp_is_required_in_prod_for_reviewers_and_admins_only(settings: Settings) -> None:
    prod = settings.model_copy(update={"env": "prod"})
    for role, needed in (("viewer", False), ("reviewer", True), ("admin", True)):
        account = OfficialAccount(name="x", role=role, regions=["us"])
        assert accounts.totp_required(prod, account) is needed
        assert accounts.totp_required(settings, account) is False


def test_the_admin_page_creates_and_disables_accounts_and_exports_the_audit(
    client: TestClient, settings: Settings, make_official: MakeOfficial
) -> None:
    make_official("root", role="admin", regions="*")
    make_official("gus")
    login(client, "root")
    admin = client.get("/admin")
    assert admin.status_code == 200 and 'data-name="gus"' in admin.text
    token = form_csrf(admin.text)
    assert client.post("/admin/accounts", data={"name": "hal", "role": "viewer",
                                                "regions": "us/wa", "csrf_token": "no"}
                       ).status_code == 403
    created = client.post("/admin/accounts", data={"name": "hal", "role": "viewer",
                                                   "regions": "us/wa", "csrf_token": token})
    assert created.status_code == 201
    assert re.search(r'id="setup-link">http://[^<]+/setup/[\w-]+<', created.text)
    assert client.post("/admin/accounts/gus/disable", data={"csrf_token": token},
                       follow_redirects=False).status_code == 303
    assert _account(settings, "gus").disabled_at is not None
    page = client.get("/admin/audit")
    assert page.status_code == 200 and "account_disable" in page.text
    exported = client.get("/admin/audit.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["actor"], r["action"], r["target"]) for r in rows[:2]] == [
        ("root", "account_disable", "gus"), ("root", "account_create", "hal")]
    assert rows[-1]["action"] == "login" and rows[-1]["actor"] == "root"
    only = client.get("/admin/audit.csv", params={"actor": "nobody"}).text.splitlines()
    assert len(only) == 1  # the header
    assert csrf_of(client)

