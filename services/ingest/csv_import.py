"""CSV uploads: the Drug Checking BC export as is, and Lookout's generic template.

Each data row becomes a `DrugCheckIn` or a rejection with its line number. The BC export has
no sample id: a row's id derives from its content and how many identical rows came before
it in the file, so uploading the same file again gives the same ids (all duplicates).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.ingest.schemas import DrugCheckIn, Location, StripResult
from shared.problems import ProblemError
from shared.substances import parse_ftir_list

CsvFormat = Literal["drugcheckingbc", "generic"]

BC_COLUMNS = ("Date", "Site", "City/Town", "Expected Substance", "Fentanyl Test Strip",
              "Benzo Test Strip", "FTIR Spectrometer")
GENERIC_COLUMNS = ("sample_id", "collected_at", "tested_at", "postal_code", "city", "state",
                   "lat", "lon", "collection_site", "sold_as", "form", "methods", "substances",
                   "fentanyl_strip", "benzo_strip", "xylazine_strip", "nitazene_strip",
                   "adverse_reaction", "notes")
GENERIC_REQUIRED = ("sample_id", "collected_at")
STRIPS = ("fentanyl_strip", "benzo_strip", "xylazine_strip", "nitazene_strip")

_STRIP_WORDS: dict[str, StripResult] = {
    "true": "positive", "positive": "positive", "pos": "positive", "+": "positive",
    "false": "negative", "negative": "negative", "neg": "negative", "-": "negative",
    "invalid": "invalid",
    "n/a": "not_tested", "na": "not_tested", "": "not_tested", "not tested": "not_tested",
    "not_tested": "not_tested",
}
_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass
class CsvRow:
    line: int
    body: DrugCheckIn | None
    reason: str = ""  # rejected: validation or location
    errors: list[dict[str, str]] = field(default_factory=list)


class RowError(ValueError):
    def __init__(self, column: str, message: str, reason: str = "validation") -> None:
        super().__init__(message)
        self.column = column
        self.reason = reason


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def strip_result(value: str, column: str) -> StripResult:
    """"True"/"False"/"N/A"/"Invalid", or several results of one sample ("Positive;Negative":
    positive wins, then negative, then invalid)."""
    words = [w.strip().lower() for w in value.split(";")] or [""]
    try:
        results = {_STRIP_WORDS[w] for w in words}
    except KeyError:
        raise RowError(column, f"unknown test strip result {value!r} (use positive, negative, "
                               "invalid, N/A, True or False)") from None
    for result in ("positive", "negative", "invalid"):
        if result in results:
            return result
    return "not_tested"


def _noon(day: date, region_tz: str) -> datetime:
    """A date alone means noon, local time of the region."""
    return datetime.combine(day, time(12), ZoneInfo(region_tz))


def _time_zone(location: Location) -> str:
    from services.ingest.service.common import resolve_location

    try:
        return resolve_location(location).time_zone
    except ProblemError as exc:
        raise RowError("location", exc.detail, reason="location") from exc


def bc_sample_id(row: list[str], occurrence: int) -> str:
    digest = hashlib.sha256("\x1f".join(row).encode()).hexdigest()[:24]
    return f"bc-{digest}-{occurrence}"


def _bc_row(cells: dict[str, str], sample_id: str, province: str) -> dict[str, Any]:
    location = Location(city=cells["City/Town"], state=province)
    try:
        day = date.fromisoformat(cells["Date"].strip())
    except ValueError:
        raise RowError("Date", f"not a date (YYYY-MM-DD): {cells['Date']!r}") from None
    strips: dict[str, StripResult] = {}
    methods: list[str] = []
    ftir = cells["FTIR Spectrometer"].strip()
    if ftir:
        methods.append("ftir")
    for column, name in (("Fentanyl Test Strip", "fentanyl_strip"),
                         ("Benzo Test Strip", "benzo_strip")):
        result = strip_result(cells[column], column)
        if result != "not_tested":
            strips[name] = result
            methods.append(name)
    return {
        "sample_id": sample_id,
        "collected_at": _noon(day, _time_zone(location)),
        "location": location.model_dump(exclude_none=True),
        "collection_site": cells["Site"].strip() or None,
        "sold_as": cells["Expected Substance"].strip() or None,
        "methods": methods,
        "substances": [{"name": name, "method": "ftir"} for name in parse_ftir_list(ftir)],
        "strips": strips,
    }


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def _generic_row(cells: dict[str, str]) -> dict[str, Any]:
    def get(name: str) -> str | None:
        value = (cells.get(name) or "").strip()
        return value or None

    location: dict[str, Any] = {k: get(k) for k in ("postal_code", "city", "state", "lat", "lon")
                                if get(k) is not None}
    body: dict[str, Any] = {"sample_id": get("sample_id"), "location": location}
    for name in ("tested_at", "collection_site", "sold_as", "form", "notes"):
        if get(name) is not None:
            body[name] = get(name)
    methods = _split(cells.get("methods") or "")
    body["substances"] = [{"name": n, "method": methods[0] if methods else "ftir"}
                          for n in _split(cells.get("substances") or "")]
    strips = {}
    for name in STRIPS:
        if get(name) is not None:
            result = strip_result(cells[name], name)
            if result != "not_tested":
                strips[name] = result
                if name not in methods:
                    methods.append(name)
    body["strips"], body["methods"] = strips, methods
    if get("adverse_reaction") is not None:
        word = str(get("adverse_reaction")).lower()
        if word not in _BOOL_WORDS:
            raise RowError("adverse_reaction", "use true or false")
        body["adverse_reaction"] = _BOOL_WORDS[word]
    collected = get("collected_at")
    if collected is not None and len(collected) == 10:  # a date alone: noon, local time
        try:
            day = date.fromisoformat(collected)
        except ValueError:
            raise RowError("collected_at", f"not a date or time: {collected!r}") from None
        collected_at: Any = _noon(day, _time_zone(Location.model_validate(location)))
    else:
        collected_at = collected
    body["collected_at"] = collected_at
    return body


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": "/" + "/".join(str(p) for p in e["loc"]), "message": e["msg"],
             "type": e["type"]} for e in exc.errors()]


def detect_format(header: list[str]) -> CsvFormat:
    names = [h.strip() for h in header]
    if tuple(names[:len(BC_COLUMNS)]) == BC_COLUMNS:
        return "drugcheckingbc"
    lowered = {n.lower() for n in names}
    if set(GENERIC_REQUIRED) <= lowered:
        return "generic"
    raise ProblemError(
        422, "Unknown CSV format",
        "The first line must be the Drug Checking BC header (" + ", ".join(BC_COLUMNS)
        + ") or the generic template's (at least " + ", ".join(GENERIC_REQUIRED)
        + "); see docs/ingest.md.",
        errors=[{"field": "/file", "message": "unknown header", "type": "csv_header"}],
    )


def parse_csv(text: str, province: str = "BC") -> tuple[CsvFormat, Iterator[CsvRow]]:
    """The file's format and its rows (line numbers count the header as line 1)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ProblemError(422, "Empty CSV", "The file has no header line.",
                           errors=[{"field": "/file", "message": "empty file",
                                    "type": "csv_empty"}]) from None
    except csv.Error as exc:
        raise ProblemError(422, "Unreadable CSV", str(exc),
                           errors=[{"field": "/file", "message": str(exc),
                                    "type": "csv_error"}]) from None
    fmt = detect_format(header)
    names = [h.strip() if fmt == "drugcheckingbc" else h.strip().lower() for h in header]
    return fmt, _rows(reader, names, fmt, province)


def _rows(reader: Any, names: list[str], fmt: CsvFormat, province: str) -> Iterator[CsvRow]:
    seen: Counter[tuple[str, ...]] = Counter()
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield CsvRow(reader.line_num, None, "validation",
                         [{"field": "", "message": str(exc), "type": "csv_error"}])
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in raw):
            continue  # blank line
        if len(raw) != len(names):
            yield CsvRow(line, None, "validation", [{
                "field": "", "type": "csv_columns",
                "message": f"{len(raw)} columns where the header has {len(names)}"}])
            continue
        cells = dict(zip(names, raw, strict=True))
        try:
            if fmt == "drugcheckingbc":
                key = tuple(raw)
                seen[key] += 1
                data = _bc_row(cells, bc_sample_id(raw, seen[key]), province)
            else:
                data = _generic_row(cells)
            yield CsvRow(line, DrugCheckIn.model_validate(data))
        except RowError as exc:
            yield CsvRow(line, None, exc.reason,
                         [{"field": f"/{exc.column}", "message": str(exc), "type": exc.reason}])
        except ValidationError as exc:
            yield CsvRow(line, None, "validation", _errors(exc))
