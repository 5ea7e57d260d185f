"""Alert texts per language (en, es, fr). Short, plain GSM-7 (no accents outside the GSM-7
alphabet), always with the STOP line.

Built only from our own templates, the substance catalog's names and the region's name: a
site's free text (an unrecognized substance name, a sold-as label) never reaches an SMS. An
unrecognized substance is "an unidentified substance" here; its raw name stays in the
signal, for officials."""

from __future__ import annotations

from shared import substances
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.gsm import strip_invisible

LANGUAGES = ("en", "es", "fr")

STOP_LINE = {
    "en": "Reply STOP to cancel.",
    "es": "Responda STOP para cancelar.",
    "fr": "Repondez STOP pour annuler.",
}
SEVERITY = {
    "en": {"info": "info", "warning": "warning", "critical": "critical"},
    "es": {"info": "info", "warning": "aviso", "critical": "grave"},
    "fr": {"info": "info", "warning": "attention", "critical": "grave"},
}
SAFETY = {
    "en": "Don't use alone, start low, carry naloxone.",
    "es": "No consuma solo, empiece con poco, lleve naloxona.",
    "fr": "Ne consommez pas seul, commencez doucement, ayez de la naloxone.",
}
CONTAMINATION = {
    "en": "Lookout ALERT ({sev}): {substance} found{sold} in {region}. {safety} {stop}",
    "es": "ALERTA Lookout ({sev}): {substance} hallado{sold} en {region}. {safety} {stop}",
    "fr": "ALERTE Lookout ({sev}): {substance} detecte{sold} a {region}. {safety} {stop}",
}
UNIDENTIFIED = {
    "en": "an unidentified substance",
    "es": "una sustancia no identificada",
    "fr": "une substance non identifiee",
}
SOLD_AS = {
    "en": " in a sample sold as {sold}",
    "es": " en una muestra vendida como {sold}",
    "fr": " dans un echantillon vendu comme {sold}",
}
SPIKE = {
    "en": "Lookout ALERT ({sev}): more overdoses than usual in {region}. {safety} {stop}",
    "es": "ALERTA Lookout ({sev}): mas sobredosis de lo normal en {region}. {safety} {stop}",
    "fr": "ALERTE Lookout ({sev}): plus de surdoses que d'habitude a {region}. {safety} {stop}",
}
UPDATE_PREFIX = {"en": "UPDATE: ", "es": "ACTUALIZACION: ", "fr": "MISE A JOUR: "}
ALL_CLEAR = {
    "en": "Lookout: the alert for {region} is over. Stay safe: {safety} {stop}",
    "es": "Lookout: la alerta para {region} ha terminado. {safety} {stop}",
    "fr": "Lookout: l'alerte pour {region} est terminee. {safety} {stop}",
}


def catalog_name(substance_id: str | None) -> str | None:
    """The catalog's name of a substance id; None for an unrecognized one."""
    try:
        return substances.get_substance(substance_id).name if substance_id else None
    except KeyError:
        return None


def alert_text(signal: ContaminationSignalV1 | SpikeSignalV1, language: str = "en") -> str:
    lang = language if language in LANGUAGES else "en"
    common = {"sev": SEVERITY[lang].get(signal.severity, signal.severity),
              "region": strip_invisible(signal.region_name), "safety": SAFETY[lang],
              "stop": STOP_LINE[lang]}
    if isinstance(signal, ContaminationSignalV1):
        sold_as = catalog_name(signal.sold_as_id)
        sold = SOLD_AS[lang].format(sold=sold_as) if sold_as else ""
        substance = catalog_name(signal.substance_id) or UNIDENTIFIED[lang]
        return CONTAMINATION[lang].format(substance=substance, sold=sold, **common)
    return SPIKE[lang].format(**common)


def alert_texts(signal: ContaminationSignalV1 | SpikeSignalV1) -> dict[str, str]:
    return {lang: alert_text(signal, lang) for lang in LANGUAGES}


def all_clear_texts(region_name: str) -> dict[str, str]:
    return {lang: ALL_CLEAR[lang].format(region=region_name, safety=SAFETY[lang],
                                         stop=STOP_LINE[lang]) for lang in LANGUAGES}


def update_texts(texts: dict[str, str]) -> dict[str, str]:
    return {lang: UPDATE_PREFIX.get(lang, "UPDATE: ") + text for lang, text in texts.items()}
