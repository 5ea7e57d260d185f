"""The keyword parser: a table of messages and the command each must give."""

from __future__ import annotations

import pytest

from services.alerts.keywords import parse, scrub_free_text

TABLE: list[tuple[str, str, list[str], str | None]] = [
    # body, kind, args, implied language
    ("STOP", "stop", [], None),
    ("stop", "stop", [], None),
    ("  Stop.  ", "stop", [], None),
    ("STOP!!!", "stop", [], None),
    ("stop please", "stop", [], None),
    ("STOPALL", "stop", [], None),
    ("Unsubscribe", "stop", [], None),
    ("CANCEL", "stop", [], None),
    ("end", "stop", [], None),
    ("QUIT", "stop", [], None),
    ("alto", "stop", [], "es"),
    ("PARAR", "stop", [], "es"),
    ("Cancelar", "stop", [], "es"),
    ("ARRET", "stop", [], "fr"),
    ("Arrêt", "stop", [], "fr"),
    ("arrêt.", "stop", [], "fr"),
    ("START", "start", [], None),
    ("unstop", "start", [], None),
    ("Start!", "start", [], None),
    ("HELP", "help", [], None),
    ("info", "help", [], None),
    ("help?", "help", [], None),
    ("HELP ME", "treatment", [], "en"),
    ("help me please", "treatment", [], "en"),
    ("TREATMENT", "treatment", [], None),
    ("Ayuda", "treatment", [], "es"),
    ("JOIN 98104", "join", ["98104"], None),
    ("join   98104, 98105", "join", ["98104", "98105"], None),
    ("Join 98104 98105", "join", ["98104", "98105"], None),
    ("JOIN Vancouver", "join", ["Vancouver"], None),
    ("JOIN", "join", [], None),
    ("YES", "yes", [], None),
    ("yes.", "yes", [], None),
    ("Si", "yes", [], "es"),
    ("AREAS", "areas", [], None),
    ("ADD 98105", "add", ["98105"], None),
    ("remove 98105", "remove", ["98105"], None),
    ("LANG ES", "lang", ["es"], None),
    ("lang: fr", "lang", ["fr"], None),
    ("Lang en", "lang", ["en"], None),
    ("LANG XX", "other", [], None),
    ("OD 98104 two people down at the park", "report", ["98104"], None),
    ("od 98104: blue pills", "report", ["98104"], None),
    ("REPORT 98104 bad batch", "report", ["98104"], None),
    ("OD bad batch downtown", "report", [], None),
    ("1", "other", [], None),
    ("what is this", "other", [], None),
    ("", "other", [], None),
    ("   ", "other", [], None),
]


@pytest.mark.parametrize(("body", "kind", "args", "language"), TABLE)
def test_keyword_table(body: str, kind: str, args: list[str], language: str | None) -> None:
    command = parse(body)
    assert command.kind == kind
    assert command.args == args
    assert command.language == language


def test_report_text_is_kept_after_the_postal_code() -> None:
    assert parse("OD 98104 two people down at the park").text == "two people down at the park"
    assert parse("OD bad batch downtown").text == "bad batch downtown"


def test_free_text_loses_numbers_and_emails() -> None:
    text = scrub_free_text("call me at +1 (206) 555-0123 or me@example.org, 98104 corner")
    assert "555" not in text and "example.org" not in text
    assert "98104" in text  # a postal code is not a phone number
