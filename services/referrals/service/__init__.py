"""Referral logic, by domain: the provider directory as matching sees it (`directory`), the
conversation from request to choice (`conversation`), the provider hand-off (`handoff`),
the staff API's callers (`site_keys`), referrals asked for over HTTP (`intake`), an admin's
edits of a listing (`listings`), follow-ups and purge (`retention`); `common` holds the
statuses and the outbox writes they share.

Functions take a session and never commit; every status change writes a `ReferralEventV1`
and every text an `SmsRequestedV1` to the outbox in the same transaction. `now` is always
passed in, so tests drive time. The names below are the package's interface.
"""

from services.referrals.service.common import FINAL, OPEN, TRANSITIONS, HandOff, set_status
from services.referrals.service.conversation import (
    SHAREABLE,
    ConsentIn,
    choose,
    create_referral,
    handle_reply,
    handle_request,
    handle_stop,
    offer_options,
    parse_service_types,
)
from services.referrals.service.directory import (
    cached_entries,
    find_matches,
    invalidate_directory,
    load_entries,
)
from services.referrals.service.handoff import (
    NOTICE_STALE_SECONDS,
    PHONE_REFERENCE,
    check_link,
    claim_notice,
    hand_off,
    link_token,
    notify_and_record,
    provider_link,
    provider_update,
    stuck_hand_offs,
)
from services.referrals.service.intake import (
    LANGUAGES,
    PAYMENTS,
    WEB_CONSENT,
    HelpForm,
    HelpFormError,
    region_for,
    staff_referral,
    web_referral,
)
from services.referrals.service.listings import update_service
from services.referrals.service.retention import purge, stats, tick
from services.referrals.service.site_keys import (
    STAFF_SCOPE,
    StaffCaller,
    apply_site_key,
    staff_caller,
    visible_referral,
)

__all__ = [
    "FINAL", "LANGUAGES", "NOTICE_STALE_SECONDS", "OPEN", "PAYMENTS", "PHONE_REFERENCE",
    "SHAREABLE", "STAFF_SCOPE", "TRANSITIONS", "WEB_CONSENT", "ConsentIn", "HandOff", "HelpForm",
    "HelpFormError", "StaffCaller", "apply_site_key", "cached_entries", "check_link", "choose",
    "claim_notice", "create_referral", "find_matches", "hand_off", "handle_reply",
    "handle_request", "handle_stop", "invalidate_directory", "link_token", "load_entries",
    "notify_and_record", "offer_options", "parse_service_types", "provider_link",
    "provider_update", "purge", "region_for", "set_status", "staff_caller", "staff_referral",
    "stats", "stuck_hand_offs", "tick", "update_service", "visible_referral", "web_referral",
]
