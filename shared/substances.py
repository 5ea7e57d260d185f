"""Substance catalog and name normalizer.

The catalog (``data/substances.csv``) lists canonical substances with a class and a risk
level; ``data/substance_synonyms.csv`` maps raw names (FTIR library names, sold-as labels,
street names, brand names) to a canonical id, or classes them as uncertain / no match.

Lookup is by a compact key (case-folded, letters and digits only), so "2C-B", "2cb" and
" 2C B " are the same name. A name not found as written is retried without a trailing salt
or ester ("Cocaine HCl", "Codeine Sulfate", "Testosterone Enanthate"), without a "trace"
qualifier, and without a "possible"-style qualifier (which makes the match uncertain).
A name nothing matches is returned as unrecognized with the raw text kept: it may be a new
substance.
"""

import ast
import csv
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

HIGH_RISK = 3


class SubstanceClass(StrEnum):
    OPIOID = "opioid"
    FENTANYL_ANALOG = "fentanyl_analog"
    NITAZENE = "nitazene"
    BENZODIAZEPINE = "benzodiazepine"
    ALPHA2_AGONIST = "alpha2_agonist"
    STIMULANT = "stimulant"
    PSYCHEDELIC = "psychedelic"
    DISSOCIATIVE = "dissociative"
    CUT = "cut"
    OTHER = "other"
    UNKNOWN = "unknown"


class MatchStatus(StrEnum):
    RECOGNIZED = "recognized"
    CUT_BENIGN = "cut_benign"
    UNCERTAIN = "uncertain"
    NO_MATCH = "no_match"
    UNRECOGNIZED = "unrecognized"


@dataclass(frozen=True)
class Substance:
    id: str
    name: str
    cls: SubstanceClass
    risk: int  # 0 benign .. 4 extreme (carfentanil, nitazenes)


@dataclass(frozen=True)
class SubstanceMatch:
    raw: str
    status: MatchStatus
    substance: Substance | None  # None for no_match and unrecognized


@dataclass(frozen=True)
class _Entry:
    status: MatchStatus
    substance: Substance | None


# Tried longest first so "phenylpropionate" wins over "propionate".
_SALT_SUFFIXES = tuple(
    sorted(
        """hcl hydrochloride hbr hydrobromide base freebase salt citrate sulfate sulphate
        phosphate tartrate bitartrate maleate besylate mesylate fumarate succinate sodium
        potassium acetate benzoate cypionate decanoate enanthate propionate phenylpropionate
        undecanoate""".split(),
        key=len,
        reverse=True,
    )
)
_UNCERTAIN_WORDS = frozenset(
    "possible possibly probable probably likely suspected presumptive uncertain".split()
)
_QUALIFIER_WORDS = _UNCERTAIN_WORDS | {"trace", "traces"}
_MAX_KEY_LENGTH = 200  # bounds the salt-stripping recursion on junk input
_RECOGNIZED_STATUSES = frozenset({MatchStatus.RECOGNIZED, MatchStatus.CUT_BENIGN})
# Sold-as labels may name a mix: "Fentanyl and Heroin", "Acetaminophen/Oxycodone".
_COMBO_SPLIT = re.compile(r"\s+(?:and|or|with|plus)\s+|\s*[+&/,;]\s*", re.IGNORECASE)


def _tokens(raw: str) -> list[str]:
    text = unicodedata.normalize("NFKC", raw).casefold().replace("\u03b1", "alpha")
    return re.findall(r"[a-z0-9]+", text)


def _key(raw: str) -> str:
    return "".join(_tokens(raw))


def _read_csv(filename: str) -> Iterator[dict[str, str]]:
    with resources.files("shared.data").joinpath(filename).open(encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _status_for(substance: Substance) -> MatchStatus:
    return MatchStatus.CUT_BENIGN if substance.cls is SubstanceClass.CUT else MatchStatus.RECOGNIZED


@cache
def _catalog() -> dict[str, Substance]:
    catalog: dict[str, Substance] = {}
    for row in _read_csv("substances.csv"):
        substance = Substance(
            id=row["id"], name=row["name"], cls=SubstanceClass(row["class"]), risk=int(row["risk"])
        )
        if substance.id in catalog:
            raise ValueError(f"duplicate substance id {substance.id!r}")
        if not 0 <= substance.risk <= 4:
            raise ValueError(f"risk out of range for {substance.id!r}")
        catalog[substance.id] = substance
    return catalog


def _add(index: dict[str, _Entry], name: str, entry: _Entry) -> None:
    key = _key(name)
    if not key:
        raise ValueError(f"catalog name {name!r} has no letters or digits")
    if index.setdefault(key, entry) != entry:
        raise ValueError(f"catalog name {name!r} is ambiguous: {index[key]} vs {entry}")


@cache
def _index() -> dict[str, _Entry]:
    catalog = _catalog()
    index: dict[str, _Entry] = {}
    for substance in catalog.values():
        entry = _Entry(_status_for(substance), substance)
        _add(index, substance.id, entry)
        _add(index, substance.name, entry)
    for row in _read_csv("substance_synonyms.csv"):
        substance_id, status = row["substance_id"], row["status"]
        if status == MatchStatus.NO_MATCH:
            if substance_id:
                raise ValueError(f"no_match synonym {row['name']!r} names a substance")
            entry = _Entry(MatchStatus.NO_MATCH, None)
        elif status in ("", MatchStatus.UNCERTAIN):
            substance = catalog[substance_id]
            entry = _Entry(MatchStatus(status) if status else _status_for(substance), substance)
        else:
            raise ValueError(f"bad status {status!r} for synonym {row['name']!r}")
        _add(index, row["name"], entry)
    return index


def _strip_salts(key: str, index: dict[str, _Entry]) -> _Entry | None:
    if key in index:
        return index[key]
    for suffix in _SALT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            entry = _strip_salts(key[: -len(suffix)], index)
            if entry is not None:
                return entry
    return None


def _lookup(tokens: list[str]) -> _Entry | None:
    index = _index()
    entry = _strip_salts("".join(tokens), index)
    if entry is not None:
        return entry
    core, uncertain = list(tokens), False
    while core and core[0] in _QUALIFIER_WORDS:
        uncertain |= core.pop(0) in _UNCERTAIN_WORDS
    while core and core[-1] in _QUALIFIER_WORDS:
        uncertain |= core.pop() in _UNCERTAIN_WORDS
    if not core or len(core) == len(tokens):
        return None
    entry = _strip_salts("".join(core), index)
    if entry is not None and uncertain and entry.status in _RECOGNIZED_STATUSES:
        return _Entry(MatchStatus.UNCERTAIN, entry.substance)
    return entry


def normalize_substance(raw: str) -> SubstanceMatch:
    """Map one detected-substance name (e.g. an FTIR library name) to the catalog."""
    tokens = _tokens(raw)
    if not tokens:
        return SubstanceMatch(raw=raw, status=MatchStatus.NO_MATCH, substance=None)
    entry = _lookup(tokens) if sum(map(len, tokens)) <= _MAX_KEY_LENGTH else None
    if entry is None:
        return SubstanceMatch(raw=raw, status=MatchStatus.UNRECOGNIZED, substance=None)
    return SubstanceMatch(raw=raw, status=entry.status, substance=entry.substance)


def normalize_sold_as(raw: str) -> SubstanceMatch:
    """Map what a sample was sold as; a mix ("Fentanyl and Heroin") maps to its riskiest part."""
    match = normalize_substance(raw)
    if match.status is not MatchStatus.UNRECOGNIZED:
        return match
    parts = [normalize_substance(part) for part in _COMBO_SPLIT.split(raw) if part.strip()]
    found = [(part.substance.risk, part) for part in parts if part.substance is not None]
    if len(parts) < 2 or not found:
        return match
    best = max(found, key=lambda pair: pair[0])[1]  # first of the riskiest parts
    return SubstanceMatch(raw=raw, status=best.status, substance=best.substance)


def get_substance(substance_id: str) -> Substance:
    try:
        return _catalog()[substance_id]
    except KeyError:
        raise KeyError(f"unknown substance id {substance_id!r}") from None


def all_substances() -> list[Substance]:
    return list(_catalog().values())


def is_high_risk(substance: Substance) -> bool:
    return substance.risk >= HIGH_RISK


def parse_ftir_list(cell: str) -> list[str]:
    """Parse a BC drug-checking "FTIR Spectrometer" cell, e.g. "['Fentanyl HCl', 'Caffeine']".

    Blank names are dropped; anything that is not a list or tuple literal gives [].
    """
    text = cell.strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return []
    if not isinstance(value, list | tuple):
        return []
    return [item.strip() for item in value if isinstance(item, str) and item.strip()]
