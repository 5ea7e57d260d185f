import csv
import io

from shared.csvexport import csv_text, safe_cell


def test_cells_a_spreadsheet_would_evaluate_are_quoted() -> None:
    for bad in ("=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert safe_cell(bad) == "'" + bad
    assert safe_cell("fentanyl") == "fentanyl"
    assert safe_cell(-3) == -3 and safe_cell(1.5) == 1.5
    assert safe_cell(None) == "" and safe_cell(True) == "true"


def test_csv_text_escapes_every_cell_and_keeps_rows() -> None:
    text = csv_text(["sold as", "=n"], [["=cmd|' /C calc'!A0", 2], ["heroin, pink", -1]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["sold as", "'=n"], ["'=cmd|' /C calc'!A0", "2"], ["heroin, pink", "-1"]]
