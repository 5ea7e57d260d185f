"""Open Referral HSDS 3.0 import and export, by role: the tables, field rules and report
(`tables`), reading an input into rows (`reading`), loading rows into the directory
(`loading`), and the export (`export`).

Input: a directory or .zip holding a tabular data package (`datapackage.json` naming CSV
resources, or bare `<table>.csv` files), or a JSON file of HSDS service objects (one, a list,
or an API page `{"contents": [...]}`) with their nested organization, locations, phones,
schedules and so on. Every record is validated; bad ones are rejected with a reason and the
rest are upserted by id, so importing the same package twice changes nothing. The names
below are the package's interface.
"""

from services.referrals.hsds.export import export_rows, write_package
from services.referrals.hsds.loading import import_path, import_rows
from services.referrals.hsds.reading import flatten_json, hsds_kind, read_package
from services.referrals.hsds.tables import TABLES, UNUSED_TABLES, ImportReport, Rejected

__all__ = [
    "TABLES", "UNUSED_TABLES", "ImportReport", "Rejected", "export_rows", "flatten_json",
    "hsds_kind", "import_path", "import_rows", "read_package", "write_package",
]
