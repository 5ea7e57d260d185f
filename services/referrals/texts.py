"""The SMS texts of a referral conversation: plain GSM-7, at most two segments each, in the
person's language (English, Spanish and French, as the alerts service; other languages get
English). Accents are written here for readers and dropped by `gsm` on the way out."""

from __future__ import annotations

import unicodedata
from typing import Any

from shared.gsm import is_gsm7, segment_count

MAX_SEGMENTS = 2
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "stop": "STOP to end.",
        "fallback": "In a crisis call or text 988. For other services call 211.",
        "head": "Lookout: places that can help, near you:",
        "open_now": "open now",
        "opens_in": "opens in {minutes}min",
        "reply": "Reply {numbers}. We tell only the place you pick what you need and your "
                 "language.",
        "coming": "Lookout: {name} knows you're coming.",
        "address": "Address: {address}",
        "hours": "Hours: {hours}",
        "phone": "Phone: {phone}",
        "later": "We'll check in later.",
        "open_until": "open now until {time}",
        "open_24h": "open 24 hours",
        "opens_in_long": "opens in {minutes} min",
        "followup": "Lookout: did you connect? Reply 1 yes, 2 no, 3 other options.",
        "none_found": "Lookout: we found no place open near you right now.",
        "again_later": "Text TREATMENT again later.",
        "ask_location": "Lookout: to find help near you, reply with your ZIP code (or city, "
                        "BC).",
        "ask_choice": "Lookout: please reply {numbers} to pick a place.",
        "connected": "Lookout: glad you connected. Text TREATMENT any time you need help "
                     "again.",
        "not_connected": "Lookout: sorry it didn't work out.",
        "try_again": "Text TREATMENT to try again.",
    },
    "es": {
        "stop": "STOP para terminar.",
        "fallback": "En crisis llama o textea al 988. Para otros servicios llama al 211.",
        "head": "Lookout: lugares que pueden ayudarte, cerca:",
        "open_now": "abierto ahora",
        "opens_in": "abre en {minutes}min",
        "reply": "Responde {numbers}. Solo le decimos al lugar que elijas lo que necesitas y "
                 "tu idioma.",
        "coming": "Lookout: {name} sabe que vas.",
        "address": "Direccion: {address}",
        "hours": "Horario: {hours}",
        "phone": "Telefono: {phone}",
        "later": "Te escribiremos mas tarde.",
        "open_until": "abierto hasta las {time}",
        "open_24h": "abierto 24 horas",
        "opens_in_long": "abre en {minutes} min",
        "followup": "Lookout: pudiste conectar? Responde 1 si, 2 no, 3 otras opciones.",
        "none_found": "Lookout: no encontramos un lugar abierto cerca ahora.",
        "again_later": "Textea TREATMENT mas tarde.",
        "ask_location": "Lookout: para buscar ayuda cerca, responde con tu codigo postal "
                        "(ZIP).",
        "ask_choice": "Lookout: responde {numbers} para elegir un lugar.",
        "connected": "Lookout: que bueno que conectaste. Textea TREATMENT cuando necesites "
                     "ayuda.",
        "not_connected": "Lookout: lamentamos que no funciono.",
        "try_again": "Textea TREATMENT para intentar de nuevo.",
    },
    "fr": {
        "stop": "STOP pour arrêter.",
        "fallback": "En crise, appelez ou textez le 988. Pour d'autres services, appelez le "
                    "211.",
        "head": "Lookout: des lieux qui peuvent vous aider, près de vous:",
        "open_now": "ouvert",
        "opens_in": "ouvre dans {minutes}min",
        "reply": "Répondez {numbers}. Nous disons seulement au lieu choisi ce dont vous avez "
                 "besoin et votre langue.",
        "coming": "Lookout: {name} sait que vous venez.",
        "address": "Adresse: {address}",
        "hours": "Horaires: {hours}",
        "phone": "Téléphone: {phone}",
        "later": "Nous reprendrons contact plus tard.",
        "open_until": "ouvert jusqu'à {time}",
        "open_24h": "ouvert 24 h sur 24",
        "opens_in_long": "ouvre dans {minutes} min",
        "followup": "Lookout: avez-vous pu les joindre? Répondez 1 oui, 2 non, 3 autres "
                    "options.",
        "none_found": "Lookout: aucun lieu ouvert près de vous pour le moment.",
        "again_later": "Textez TRAITEMENT plus tard.",
        "ask_location": "Lookout: pour trouver de l'aide près de vous, répondez avec votre "
                        "code ZIP ou votre ville (ex.: Surrey, BC).",
        "ask_choice": "Lookout: répondez {numbers} pour choisir un lieu.",
        "connected": "Lookout: tant mieux si vous avez pu les joindre. Textez TRAITEMENT "
                     "quand vous avez besoin d'aide.",
        "not_connected": "Lookout: désolé que cela n'ait pas marché.",
        "try_again": "Textez TRAITEMENT pour réessayer.",
    },
}


def t(language: str, key: str, **values: Any) -> str:
    table = TEXTS.get(language[:2].lower(), TEXTS["en"])
    return table[key].format(**values)


def gsm(text: str) -> str:
    """Drop accents and anything GSM-7 cannot carry (names come from directory data)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain if is_gsm7(c))


def fit(parts: list[str], shrinkable: list[int], limit: int = MAX_SEGMENTS) -> str:
    """Join `parts` with newlines; shorten the parts at `shrinkable` until it fits."""
    parts = [gsm(p) for p in parts]
    for _ in range(200):
        text = "\n".join(parts)
        if segment_count(text) <= limit:
            return text
        longest = max(shrinkable, key=lambda i: len(parts[i]), default=None)
        if longest is None or len(parts[longest]) <= 12:
            break
        parts[longest] = parts[longest][: len(parts[longest]) - 4].rstrip() + "."
    text = "\n".join(parts)
    return text[: 153 * limit]


def options_text(options: list[dict[str, Any]], language: str = "en") -> str:
    """Numbered options; long names are shortened (never the distance or the hours)."""
    names, suffixes = [], []
    for option in options:
        when = (t(language, "open_now") if option["opens_in_minutes"] == 0
                else t(language, "opens_in", minutes=option["opens_in_minutes"]))
        dist = option.get("distance_km")
        suffixes.append((f" {dist:.0f}km" if isinstance(dist, (int, float)) else "")
                        + f" {when}")
        names.append(gsm(str(option["name"])))
    numbers = ", ".join(str(n) for n in range(1, len(options) + 1))
    head = t(language, "head")
    tail = f"{t(language, 'reply', numbers=numbers)} {t(language, 'stop')}"

    def render() -> str:
        lines = [f"{n} {name}{suffix}" for n, (name, suffix) in
                 enumerate(zip(names, suffixes, strict=True), start=1)]
        return gsm("\n".join([head, *lines, tail]))

    for _ in range(300):
        text = render()
        if segment_count(text) <= MAX_SEGMENTS or not names:
            return text
        longest = max(range(len(names)), key=lambda i: len(names[i]))
        if len(names[longest]) <= 8:
            break
        names[longest] = names[longest][:-3].rstrip() + "."
    return fit([render()], shrinkable=[0])


def hours_text(option: dict[str, Any], language: str = "en") -> str:
    if option.get("opens_in_minutes") == 0:
        closes = option.get("closes_at")
        return t(language, "open_until", time=closes) if closes else t(language, "open_24h")
    return t(language, "opens_in_long", minutes=option.get("opens_in_minutes"))


def details_text(name: str, address: str, hours: str, phone: str, language: str = "en") -> str:
    return fit([t(language, "coming", name=name), t(language, "address", address=address),
                t(language, "hours", hours=hours), t(language, "phone", phone=phone),
                f"{t(language, 'later')} {t(language, 'stop')}"], shrinkable=[0, 1, 2])


def followup_text(language: str = "en") -> str:
    return gsm(f"{t(language, 'followup')} {t(language, 'stop')}")


def none_found_text(language: str = "en") -> str:
    return gsm(f"{t(language, 'none_found')} {t(language, 'fallback')} "
               f"{t(language, 'again_later')}")


def ask_location_text(language: str = "en") -> str:
    return gsm(f"{t(language, 'ask_location')} {t(language, 'stop')}")


def ask_choice_text(count: int, language: str = "en") -> str:
    numbers = ", ".join(str(n) for n in range(1, count + 1))
    return gsm(f"{t(language, 'ask_choice', numbers=numbers)} {t(language, 'stop')}")


def thanks_text(connected: bool, language: str = "en") -> str:
    if connected:
        return gsm(t(language, "connected"))
    return gsm(f"{t(language, 'not_connected')} {t(language, 'fallback')} "
               f"{t(language, 'try_again')}")


LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "zh": "Chinese",
                  "vi": "Vietnamese"}
PROVIDER_SEGMENTS = 3  # a provider's notice carries a link: one segment more than a person's


def provider_notice_text(notice: dict[str, Any]) -> str:
    """The hand-off notice as an SMS to the provider's number (in English, their working
    language): only what is in `notice`, which holds only the consented fields. The status
    link and the callback number are never shortened; the note and names are."""
    lines = [f"Lookout referral: a person chose {_cut(notice['service_name'], 60)}."]
    if notice.get("service_types"):
        lines.append("Needs: " + _cut(", ".join(t.replace("_", " ")
                                                for t in notice["service_types"]), 100))
    if notice.get("language"):
        lines.append("Language: " + LANGUAGE_NAMES.get(notice["language"][:2],
                                                       notice["language"]))
    if notice.get("region"):
        lines.append(f"Area: {_cut(notice['region'], 60)}")
    if notice.get("age") is not None:
        lines.append(f"Age: {notice['age']}")
    if notice.get("payment"):
        lines.append("Payment: " + str(notice["payment"]).replace("_", " "))
    if notice.get("note"):
        lines.append(f"Note: {_cut(notice['note'], 160)}")
    if notice.get("callback_phone"):
        lines.append(f"Call back: {notice['callback_phone']}")
    lines.append(f"Update: {notice['status_link']}")
    shrinkable = [i for i, line in enumerate(lines)
                  if i == 0 or line.startswith(("Note: ", "Area: "))]
    return fit(lines, shrinkable, limit=PROVIDER_SEGMENTS)


def _cut(text: str, limit: int) -> str:
    text = str(text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "."
