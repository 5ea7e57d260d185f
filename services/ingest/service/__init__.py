"""Ingest logic, by domain: sites and keys (`sites`), drug-checking results
(`drug_checks`), overdose reports (`reports`), a site's own submissions (`submissions`).

Functions take a session and never commit: the caller's unit of work does. The names
below are the package's interface.
"""

from services.ingest.service.common import Caller, ItemOutcome, resolve_location
from services.ingest.service.csv_upload import import_csv
from services.ingest.service.drug_checks import (
    Known,
    PreparedCheck,
    build_result_event,
    get_drug_check,
    known_drug_checks,
    prepare_drug_checks,
    store_drug_checks,
    submit_drug_check,
    submit_drug_checks,
)
from services.ingest.service.reports import (
    build_report_event,
    get_overdose_report,
    submit_overdose_reports,
)
from services.ingest.service.sites import (
    add_key,
    announce_all_keys,
    authenticate,
    cached_caller,
    create_site,
    list_keys,
    list_sites,
    revoke_key,
    rotate_key,
)
from services.ingest.service.submissions import list_submissions, parse_since

__all__ = [
    "Caller", "ItemOutcome", "Known", "PreparedCheck", "add_key", "announce_all_keys",
    "authenticate",
    "build_report_event", "build_result_event", "cached_caller", "create_site",
    "get_drug_check", "get_overdose_report", "import_csv", "known_drug_checks", "list_keys",
    "list_sites",
    "list_submissions", "parse_since", "prepare_drug_checks", "resolve_location",
    "revoke_key", "rotate_key", "store_drug_checks", "submit_drug_check",
    "submit_drug_checks", "submit_overdose_reports",
]
