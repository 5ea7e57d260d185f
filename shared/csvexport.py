"""CSV exports that a spreadsheet opens safely: a cell starting with = + - @ (or a tab or
carriage return) would run as a formula in Excel or LibreOffice (CSV/formula injection,
OWASP), so it is prefixed with a single quote. Numbers are written as numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value as a CSV cell: None -> '', text that a spreadsheet would evaluate ->
    quoted with a leading apostrophe; ints and floats as they are (-3 stays a number)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def unescape_cell(text: str) -> str:
    """A cell as `safe_cell` wrote it, read back: the apostrophe it put before = + - @ (tab,
    CR) is dropped, so an export imports again as it was."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The whole export: the header and every row, each cell through `safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return out.getvalue()
