"""SMS keywords: a pure parser from a message body to a command.

Tolerant of case, spacing, accents and punctuation ("  stop. ", "Arrêt!", "lang: es").
The STOP family wins whenever the first word is one of its words: when in doubt, stop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.keywords import STOP_WORDS, fold

START_WORDS = {"START", "UNSTOP", "OPTIN"}
HELP_WORDS = {"HELP", "INFO", "AIDE"}
JOIN_WORDS = {"JOIN", "SUBSCRIBE", "UNIRSE", "ALTA", "INSCRIRE"}
YES_WORDS = {"YES", "Y", "SI", "OUI"}
REPORT_WORDS = {"OD", "REPORT", "REPORTE", "SIGNALER"}
TREATMENT_WORDS = {"TREATMENT", "AYUDA", "TRATAMIENTO", "TRAITEMENT"}
LANG_WORDS = {"LANG", "LANGUAGE", "IDIOMA", "LANGUE"}
LANGUAGE_CODES = {"EN": "en", "ENGLISH": "en", "ES": "es", "ESPANOL": "es", "SPANISH": "es",
                  "FR": "fr", "FRANCAIS": "fr", "FRENCH": "fr"}
# Which language a keyword tells us the person speaks (for a new contact's replies).
KEYWORD_LANGUAGE = {"ALTO": "es", "PARAR": "es", "CANCELAR": "es", "AYUDA": "es",
                    "TRATAMIENTO": "es", "UNIRSE": "es", "ALTA": "es", "SI": "es",
                    "REPORTE": "es", "IDIOMA": "es",
                    "ARRET": "fr", "ARRETER": "fr", "DESABONNER": "fr", "AIDE": "fr",
                    "TRAITEMENT": "fr", "INSCRIRE": "fr", "OUI": "fr", "SIGNALER": "fr",
                    "LANGUE": "fr"}


@dataclass(frozen=True)
class Command:
    kind: str  # stop, start, help, join, yes, areas, add, remove, lang, report, treatment, other
    args: list[str] = field(default_factory=list)
    text: str = ""  # free text (report) or the original message (other)
    language: str | None = None  # the language the keyword implies, if any


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Z0-9]+(?:-[A-Z0-9]+)*", fold(text))


def parse(body: str) -> Command:
    words = _words(body)
    if not words:
        return Command("other", text=body.strip())
    first = words[0]
    rest = words[1:]
    lang = KEYWORD_LANGUAGE.get(first)
    if first in STOP_WORDS:
        return Command("stop", language=lang)
    if first in START_WORDS and not rest:
        return Command("start", language=lang)
    if first == "HELP" and rest[:1] == ["ME"]:
        return Command("treatment", language="en")
    if first in TREATMENT_WORDS:
        return Command("treatment", language=lang)
    if first in HELP_WORDS and not rest:
        return Command("help", language=lang)
    if first in JOIN_WORDS:
        return Command("join", args=_areas(body, first), language=lang)
    if first in YES_WORDS and not rest:
        return Command("yes", language=lang)
    if first == "AREAS" and not rest:
        return Command("areas")
    if first == "ADD" and rest:
        return Command("add", args=_areas(body, first))
    if first == "REMOVE" and rest:
        return Command("remove", args=_areas(body, first))
    if first in LANG_WORDS and len(rest) == 1 and rest[0] in LANGUAGE_CODES:
        return Command("lang", args=[LANGUAGE_CODES[rest[0]]])
    if first in REPORT_WORDS:
        return _report(body, first, lang)
    return Command("other", text=body.strip())


def _after_keyword(body: str, keyword: str) -> str:
    """The original text after the first word (which folds to `keyword`)."""
    match = re.match(r"\W*\S+", body)
    rest = body[match.end():] if match and fold(match.group()).strip(" .,!?:;") == keyword \
        else body
    return rest.strip(" \t\r\n.,!?:;")


def _areas(body: str, keyword: str) -> list[str]:
    """Areas after the keyword: postal codes or names, separated by commas or spaces
    (names of several words need commas: 'JOIN North Vancouver, 98104')."""
    rest = _after_keyword(body, keyword)
    areas: list[str] = []
    for chunk in re.split(r"[,;\n]+", rest):
        chunk = chunk.strip(" .!?:")
        if not chunk:
            continue
        tokens = chunk.split()
        if all(re.fullmatch(r"\d{5}(-\d{4})?", t) for t in tokens):
            areas.extend(tokens)  # "98104 98105"
        else:
            areas.append(" ".join(tokens))
    return areas


def _report(body: str, keyword: str, lang: str | None) -> Command:
    rest = _after_keyword(body, keyword)
    match = re.match(r"(\d{5}(?:-\d{4})?|[A-Za-z]\d[A-Za-z]\s?\d[A-Za-z]\d)\b[\s,.:;-]*", rest)
    if match:
        return Command("report", args=[match.group(1).upper()], text=rest[match.end():].strip(),
                       language=lang)
    return Command("report", args=[], text=rest, language=lang)


EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
NUMBER_RE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def scrub_free_text(text: str, limit: int = 500) -> str:
    """Free text fit to publish: no e-mail addresses, no phone-like numbers."""
    text = EMAIL_RE.sub("[email]", text)
    text = NUMBER_RE.sub("[number]", text)
    return text[:limit]
