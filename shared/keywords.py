"""SMS words every service agrees on. The STOP family is one list: alerts parses inbound SMS
with it (and tells the other services, `ContactStoppedV1`), and nothing else keeps its own.
Words are compared folded: upper case, accents dropped ('Arrêt' -> 'ARRET')."""

from __future__ import annotations

import unicodedata

# The carriers' (CTIA) opt-out words, and Spanish and French ones.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT",
                        "REVOKE", "ALTO", "PARAR", "CANCELAR", "ARRET", "ARRETER",
                        "DESABONNER"})


def fold(text: str) -> str:
    """Upper case without accents: 'Arrêt' -> 'ARRET'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
