"""`lookout sites` and `lookout officials`: sites' API keys and officials' accounts."""

from __future__ import annotations

import argparse
import sys

from shared.settings import get_settings


def cmd_sites_create(args: argparse.Namespace) -> int:
    from services.ingest.service.sites import create_site
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = get_settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            site, key = create_site(session, args.name, args.scopes)
            site_id = site.id
    except ProblemError as exc:  # e.g. the name is taken
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"site {args.name!r} created: {site_id}; scopes {','.join(args.scopes)}")
    print("the API key is shown once; store it now:")
    print(key)
    return 0


def cmd_sites_announce(args: argparse.Namespace) -> int:
    from services.ingest.service.sites import announce_all_keys
    from shared.db import session_scope

    with session_scope(get_settings().sqlalchemy_url) as session:
        count = announce_all_keys(session)
    print(f"{count} site key(s) announced on sites.keys.v1 (sent by the relay)")
    return 0


def cmd_officials_create(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = get_settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            new = accounts.create(session, settings, args.name, args.role, args.regions,
                                  with_password=args.password)
            accounts.audit(session, "cli", "account_create", target=new.account.name,
                           role=args.role, regions=new.account.regions)
            name, regions = new.account.name, new.account.regions
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"official {name!r} created: {args.role} of {', '.join(regions)}")
    if new.password:
        print("the password is shown once; give it to the official now:")
        print(new.password)
    else:
        print("the one-time setup link (valid "
              f"{settings.dashboard_setup_link_hours:g} h) is shown once:")
        print(new.setup_url)
    return 0


def cmd_officials_list(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope

    settings = get_settings()
    with session_scope(settings.sqlalchemy_url) as session:
        rows = accounts.list_accounts(session)
        print(f"{'name':24} {'role':9} {'status':14} {'totp':5} regions")
        for a in rows:
            status = "disabled" if a.disabled_at else \
                "setup pending" if not a.password_hash else "active"
            print(f"{a.name:24} {a.role:9} {status:14} {'on' if a.totp_enabled else 'off':5} "
                  f"{','.join(a.regions)}")
    return 0


def cmd_officials_disable(args: argparse.Namespace) -> int:
    from services.dashboard import accounts
    from shared.db import session_scope
    from shared.problems import ProblemError

    settings = get_settings()
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            accounts.disable(session, args.name)
            accounts.audit(session, "cli", "account_disable", target=args.name)
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"official {args.name!r} disabled; their sessions are ended")
    return 0


def cmd_officials_keys(args: argparse.Namespace) -> int:
    from shared.officials import new_key_pair

    private, public = new_key_pair()
    print("# the dashboard only:")
    print(f"LOOKOUT_DASHBOARD_SIGNING_KEY='{private.strip()}'")
    print("# every service that verifies officials (alerts):")
    print(f"LOOKOUT_DASHBOARD_PUBLIC_KEY='{public.strip()}'")
    return 0
