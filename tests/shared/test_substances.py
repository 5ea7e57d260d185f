import ast
import csv
import re
from pathlib import Path

import pytest

from shared.substances import (
    MatchStatus,
    SubstanceClass,
    all_substances,
    get_substance,
    is_high_risk,
    normalize_sold_as,
    normalize_substance,
    parse_ftir_list,
)

BC_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "drugcheckingbc-2018-2020.csv"

R = MatchStatus.RECOGNIZED
CUT = MatchStatus.CUT_BENIGN
UNC = MatchStatus.UNCERTAIN


@pytest.fixture(scope="module")
def bc_rows() -> list[dict[str, str]]:
    if not BC_CSV.exists():
        pytest.skip(f"BC drug-checking data not found at {BC_CSV}")
    with BC_CSV.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_bc_file_is_the_expected_one(bc_rows: list[dict[str, str]]) -> None:
    ftir = {name for row in bc_rows for name in ast.literal_eval(row["FTIR Spectrometer"])}
    assert len(bc_rows) == 15_300
    assert len(ftir) == 263


def test_every_bc_ftir_name_maps(bc_rows: list[dict[str, str]]) -> None:
    names = {name for row in bc_rows for name in ast.literal_eval(row["FTIR Spectrometer"])}
    unmapped = sorted(n for n in names if normalize_substance(n).status is MatchStatus.UNRECOGNIZED)
    assert unmapped == []


def test_every_bc_sold_as_value_maps(bc_rows: list[dict[str, str]]) -> None:
    values = {row["Expected Substance"] for row in bc_rows}
    unmapped = sorted(v for v in values if normalize_sold_as(v).status is MatchStatus.UNRECOGNIZED)
    assert unmapped == []


def test_parse_ftir_list_reads_every_bc_cell(bc_rows: list[dict[str, str]]) -> None:
    for row in bc_rows:
        cell = row["FTIR Spectrometer"]
        expected = [n for n in ast.literal_eval(cell) if n.strip()]
        assert parse_ftir_list(cell) == expected


@pytest.mark.parametrize(
    ("raw", "status", "substance_id", "cls"),
    [
        ("Fentanyl HCl", R, "fentanyl", SubstanceClass.OPIOID),
        ("Fentanyl or Analog", R, "fentanyl", SubstanceClass.OPIOID),
        ("Carfentanil HCl", R, "carfentanil", SubstanceClass.FENTANYL_ANALOG),
        ("Heroin (Trace)", R, "heroin", SubstanceClass.OPIOID),
        ("6-Monoacetylmorphine", R, "6-mam", SubstanceClass.OPIOID),
        ("U-47700", R, "u-47700", SubstanceClass.OPIOID),
        ("Oxycodone HCl", R, "oxycodone", SubstanceClass.OPIOID),
        ("etizolam", R, "etizolam", SubstanceClass.BENZODIAZEPINE),
        ("Flualprazolam", R, "flualprazolam", SubstanceClass.BENZODIAZEPINE),
        ("Xylazine", R, "xylazine", SubstanceClass.ALPHA2_AGONIST),
        ("Cocaine Base", R, "cocaine", SubstanceClass.STIMULANT),
        ("Methamphetamine HCl", R, "methamphetamine", SubstanceClass.STIMULANT),
        ("N-Ethylpentylone", R, "n-ethylpentylone", SubstanceClass.STIMULANT),
        ("MDMA", R, "mdma", SubstanceClass.STIMULANT),
        ("Ketamine HCl", R, "ketamine", SubstanceClass.DISSOCIATIVE),
        ("MXE", R, "methoxetamine", SubstanceClass.DISSOCIATIVE),
        ("Lysergic Acid Diethylamide", R, "lsd", SubstanceClass.PSYCHEDELIC),
        ("DMT Base", R, "dmt", SubstanceClass.PSYCHEDELIC),
        ("GHB (Wet)", R, "ghb", SubstanceClass.OTHER),
        ("AMB-FUBINACA", R, "amb-fubinaca", SubstanceClass.OTHER),
        ("Levamisole", R, "levamisole", SubstanceClass.OTHER),
        ("4-ANPP", R, "4-anpp", SubstanceClass.OTHER),
        ("Testosterone Cypionate", R, "testosterone", SubstanceClass.OTHER),
        ("Amlodipine Besylate", R, "amlodipine", SubstanceClass.OTHER),
        ("Caffeine", CUT, "caffeine", SubstanceClass.CUT),
        ("Mannitol", CUT, "mannitol", SubstanceClass.CUT),
        ("Microcrystalline Cellulose", CUT, "microcrystalline-cellulose", SubstanceClass.CUT),
        ("Surcrose", CUT, "sucrose", SubstanceClass.CUT),
        ("Dimethyl Sulfone", CUT, "dimethyl-sulfone", SubstanceClass.CUT),
        ("Sodium Citrate", CUT, "sodium-citrate", SubstanceClass.CUT),
        ("Sugar Possibly Mannitol", UNC, "mannitol", SubstanceClass.CUT),
        ("Uncertain Carbohydrate", UNC, "sugar", SubstanceClass.CUT),
        ("Uncertain Match", UNC, "unknown", SubstanceClass.UNKNOWN),
        ("Uncertain Oil", UNC, "unknown", SubstanceClass.UNKNOWN),
    ],
)
def test_hand_checked_ftir_names(
    raw: str, status: MatchStatus, substance_id: str, cls: SubstanceClass
) -> None:
    match = normalize_substance(raw)
    assert match.raw == raw
    assert match.status is status
    assert match.substance is not None
    assert match.substance.id == substance_id
    assert match.substance.cls is cls


@pytest.mark.parametrize("raw", ["No Library Match", "No Signal", "Negative", "", "   "])
def test_no_match_names(raw: str) -> None:
    match = normalize_substance(raw)
    assert match.status is MatchStatus.NO_MATCH
    assert match.substance is None
    assert match.raw == raw


# Hand-checked names, one table for both normalizers: which check reads the name
# (`sold_as`: normalize_sold_as; `substance`: normalize_substance), the name, and the
# substance it must give.
HAND_CHECKED = [
    ("sold_as", "Down (Unknown Opioid)", "unknown-opioid"),
    ("sold_as", "Fentanyl", "fentanyl"),
    ("sold_as", "Fentanyl and Heroin", "fentanyl"),
    ("sold_as", "Fentanyl and Methamphetamine", "fentanyl"),
    ("sold_as", "Carfentanil and Heroin", "carfentanil"),
    ("sold_as", "Carfentanil and Fentanyl", "carfentanil"),
    ("sold_as", "Acetaminophen and Oxycodone", "oxycodone"),
    ("sold_as", "Acetaminophen and Codeine", "codeine"),
    ("sold_as", "Crack Cocaine", "cocaine"),
    ("sold_as", "Cocaine HCl", "cocaine"),
    ("sold_as", "coke", "cocaine"),
    ("sold_as", "Speed", "amphetamine"),
    ("sold_as", "Isotonitazene", "isotonitazene"),
    ("sold_as", "Mushroom", "psilocybin"),
    ("sold_as", "Steroid", "anabolic-steroid"),
    ("sold_as", "Unknown", "unknown"),
    ("sold_as", "Fentanyl or Analog", "fentanyl"),
    ("sold_as", "heroin + carfent", "carfentanil"),
    ("substance", "  FENTANYL   hydrochloride ", "fentanyl"),
    ("substance", "fentanyl-hcl", "fentanyl"),
    ("substance", "Fentanyl.HCl", "fentanyl"),
    ("substance", "fentanylhcl", "fentanyl"),
    ("substance", "Fentanyl citrate", "fentanyl"),
    ("substance", "Carfentanil (HCl)", "carfentanil"),
    ("substance", "cocaine hydrochloride", "cocaine"),
    ("substance", "COCAINE, base", "cocaine"),
    ("substance", "Morphine sulphate", "morphine"),
    ("substance", "heroin, trace", "heroin"),
    ("substance", "2cb", "2c-b"),
    ("substance", "2C B", "2c-b"),
    ("substance", "5-meo-dmt", "5-meo-dmt"),
    ("substance", "Para-Fluorofentanyl", "fluorofentanyl"),
    ("substance", "N-pyrrolidino etonitazene", "etonitazepyne"),
    ("substance", "Protonitazene HCl", "protonitazene"),
    ("substance", "Bromazolam", "bromazolam"),
    ("substance", "Medetomidine HCl", "medetomidine"),
    ("substance", "fent", "fentanyl"),
    ("substance", "down", "unknown-opioid"),
    ("substance", "dope", "unknown-opioid"),
    ("substance", "coke", "cocaine"),
    ("substance", "crack", "cocaine"),
    ("substance", "meth", "methamphetamine"),
    ("substance", "Tina", "methamphetamine"),
    ("substance", "benzo", "benzodiazepine"),
    ("substance", "tranq", "xylazine"),
    ("substance", "molly", "mdma"),
    ("substance", "\N{GREEK SMALL LETTER ALPHA}-PVP", "alpha-pvp"),
]


def hand_checked(check: str) -> list[tuple[str, str]]:
    return [(raw, substance_id) for kind, raw, substance_id in HAND_CHECKED if kind == check]


@pytest.mark.parametrize(("raw", "substance_id"), hand_checked("sold_as"))
def test_hand_checked_sold_as(raw: str, substance_id: str) -> None:
    match = normalize_sold_as(raw)
    assert match.raw == raw
    assert match.status is MatchStatus.RECOGNIZED
    assert match.substance is not None
    assert match.substance.id == substance_id


def test_sold_as_down_is_an_unknown_opioid() -> None:
    substance = normalize_sold_as("Down (Unknown Opioid)").substance
    assert substance is not None
    assert substance.cls is SubstanceClass.OPIOID
    assert is_high_risk(substance)


def test_sold_as_blank_is_no_match() -> None:
    assert normalize_sold_as("(blank)").status is MatchStatus.NO_MATCH
    assert normalize_sold_as("").status is MatchStatus.NO_MATCH


@pytest.mark.parametrize(("raw", "substance_id"), hand_checked("substance"))
def test_tolerant_matching(raw: str, substance_id: str) -> None:
    match = normalize_substance(raw)
    assert match.substance is not None, raw
    assert match.substance.id == substance_id
    assert match.status is MatchStatus.RECOGNIZED


def test_possible_qualifier_makes_match_uncertain() -> None:
    for raw in (
        "Possible Fentanyl",
        "fentanyl (possible)",
        "likely xylazine",
        "possible trace MDA",
    ):
        match = normalize_substance(raw)
        assert match.status is MatchStatus.UNCERTAIN, raw
        assert match.substance is not None
    assert normalize_substance("Possible Fentanyl").substance == get_substance("fentanyl")


@pytest.mark.parametrize(
    "raw",
    [
        "Zorbitrol-9",
        "  Brand New Nitro Thing ",
        "possible zorbitrol",
        "possible trace",
        "hcl" * 2000,
    ],
)
def test_unknown_names_are_unrecognized_with_raw_kept(raw: str) -> None:
    for match in (normalize_substance(raw), normalize_sold_as(raw)):
        assert match.status is MatchStatus.UNRECOGNIZED
        assert match.substance is None
        assert match.raw == raw


def test_unrecognized_part_of_a_mix_does_not_hide_the_known_part() -> None:
    match = normalize_sold_as("Fentanyl and Zorbitrol")
    assert match.substance == get_substance("fentanyl")
    assert normalize_sold_as("Zorbitrol and Quux").status is MatchStatus.UNRECOGNIZED


def test_risk_levels_are_pharmacologically_sensible() -> None:
    assert get_substance("carfentanil").risk == 4
    assert get_substance("fentanyl").risk == 3
    assert get_substance("mannitol").risk == 0
    for substance in all_substances():
        assert 0 <= substance.risk <= 4
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", substance.id), substance.id
        if substance.cls is SubstanceClass.NITAZENE:
            assert substance.risk == 4, substance.id
        if substance.cls in (SubstanceClass.FENTANYL_ANALOG, SubstanceClass.BENZODIAZEPINE):
            assert is_high_risk(substance), substance.id
        if substance.cls is SubstanceClass.CUT:
            assert substance.risk <= 1, substance.id
    for substance_id in ("xylazine", "medetomidine", "etizolam", "bromazolam", "unknown-opioid"):
        assert is_high_risk(get_substance(substance_id))
    for substance_id in ("caffeine", "cocaine", "mdma", "lsd", "levamisole"):
        assert not is_high_risk(get_substance(substance_id))


def test_get_substance_unknown_id_raises() -> None:
    with pytest.raises(KeyError):
        get_substance("no-such-thing")


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("['Fentanyl or Analog', 'Caffeine']", ["Fentanyl or Analog", "Caffeine"]),
        ("  ['MDMA']  ", ["MDMA"]),
        ("('Heroin HCl', 'Caffeine')", ["Heroin HCl", "Caffeine"]),
        ("['']", []),
        ("['Mannitol', '', '  ']", ["Mannitol"]),
        ("[1, 'Caffeine', None]", ["Caffeine"]),
        ("[]", []),
        ("", []),
        ("   ", []),
        ("Caffeine", []),
        ("['Caffeine'", []),
        ("{'a': 1}", []),
        ("'Caffeine'", []),
        ("__import__('os').system('true')", []),
        ("[" * 10_000, []),
    ],
)
def test_parse_ftir_list(cell: str, expected: list[str]) -> None:
    assert parse_ftir_list(cell) == expected
