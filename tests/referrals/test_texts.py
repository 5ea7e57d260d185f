"""SMS texts stay within two GSM-7 segments whatever the directory's names."""

from __future__ import annotations

from services.referrals import texts
from shared.gsm import is_gsm7, segment_count


def test_long_and_accented_names_are_shortened_to_two_gsm7_segments() -> None:
    options = [{"name": f"Clínica Comunitária São José número {n} " + "muito longa " * 8,
                "distance_km": 1.5 * n, "opens_in_minutes": 0 if n == 1 else 45}
               for n in (1, 2, 3)]
    body = texts.options_text(options)
    assert is_gsm7(body) and segment_count(body) <= 2
    assert body.startswith("Lookout:") and "\n1 Clinica" in body and "\n3 " in body
    assert body.endswith("STOP to end.")
    assert "opens in 45min" in body


def test_details_fit_and_keep_the_phone() -> None:
    body = texts.details_text("Harbor " * 30, "100 Example Ave " * 10, "open 24 hours",
                              "206-555-0101")
    assert segment_count(body) <= 2 and "Phone: 206-555-0101" in body


def test_every_fixed_text_is_one_segment_of_gsm7() -> None:
    for body in (texts.followup_text(), texts.none_found_text(), texts.ask_location_text(),
                 texts.ask_choice_text(3), texts.thanks_text(True), texts.thanks_text(False)):
        assert is_gsm7(body) and segment_count(body) <= 2, body


def test_spanish_texts_are_gsm7_and_other_languages_fall_back_to_english() -> None:
    for language in ("es", "zh"):
        for body in (texts.followup_text(language), texts.none_found_text(language),
                     texts.ask_location_text(language), texts.thanks_text(False, language)):
            assert is_gsm7(body) and segment_count(body) <= 2, body
    assert texts.followup_text("es").startswith("Lookout: pudiste conectar?")
    assert texts.followup_text("zh") == texts.followup_text("en")


def test_french_has_every_text_and_each_fits_two_gsm7_segments() -> None:
    assert set(texts.TEXTS["fr"]) == set(texts.TEXTS["en"])
    long_options = [{"name": f"Centre de santé communautaire Côte-des-Neiges numéro {n} "
                     + "très long " * 8, "distance_km": 2.0 * n,
                     "opens_in_minutes": 0 if n == 1 else 30} for n in (1, 2, 3)]
    bodies = [
        texts.options_text(long_options, "fr"),
        texts.details_text("Clinique " * 20, "1200 rue Sainte-Catherine " * 5,
                           texts.hours_text({"opens_in_minutes": 0, "closes_at": "20:00"},
                                            "fr"), "604-555-0101", "fr"),
        texts.followup_text("fr"), texts.none_found_text("fr"), texts.ask_location_text("fr"),
        texts.ask_choice_text(3, "fr"), texts.thanks_text(True, "fr"),
        texts.thanks_text(False, "fr")]
    for body in bodies:
        assert is_gsm7(body) and segment_count(body) <= 2, body
    options, details, followup = bodies[:3]
    assert options.startswith("Lookout: des lieux qui peuvent vous aider, pres de vous:")
    assert "\n1 Centre de sante" in options and "\n3 " in options
    assert "ouvre dans 30min" in options and "Repondez 1, 2, 3." in options
    assert options.endswith("STOP pour arreter.")
    assert "Telephone: 604-555-0101" in details and "ouvert jusqu'a 20:00" in details
    assert followup == ("Lookout: avez-vous pu les joindre? Repondez 1 oui, 2 non, 3 autres "
                        "options. STOP pour arreter.")
    assert texts.t("fr-CA", "open_24h") == "ouvert 24 h sur 24"
