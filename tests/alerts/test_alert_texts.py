"""Words in a broadcast: an alert's text comes from the catalog and our templates only, is
plain GSM-7 of at most two segments, or waits for review (issue 14)."""

from __future__ import annotations

import uuid

import pytest

from services.alerts.models import Alert
from services.alerts.service.policy import text_block
from services.alerts.service.review import approve, edit
from services.alerts.service.signals import alert_from_signal
from services.detection import patterns
from shared.db import session_scope
from shared.events import ContaminationSignalV1, DetectedSubstanceV1
from shared.gsm import is_gsm7, segment_count
from shared.problems import ProblemError
from shared.settings import Settings
from testing.builders import contamination_signal, result_event

PUMP = "URGENT: call +1 206 555 0199, visit http://lookout-refund.example/claim now"
RTL = "\U0001f48a\u202eLYNATNEF\u202c \u200bpink \U0001f480"
INVISIBLE = "\u202a\u202b\u202c\u202d\u202e\u200b\u200c\u200d\u200e\u200f\u2060\u2066\u2069\ufeff"


def _novel(raw: str) -> ContaminationSignalV1:
    """The novel-substance signal detection raises for an unrecognized name a site sent."""
    result = result_event().model_copy(update={"substances": [DetectedSubstanceV1(
        raw=raw, substance_id=None, status="unrecognized")]})
    [found] = patterns.found_substances(result)
    return contamination_signal().model_copy(update={
        "pattern": "novel_substance", "substance_id": found.key,
        "substance_name": found.name, "sold_as_id": None, "sold_as_name": None})


def _alert(settings: Settings, signal: ContaminationSignalV1) -> Alert:
    with session_scope(settings.sqlalchemy_url) as session:
        return alert_from_signal(session, settings, signal)


@pytest.mark.parametrize("raw", [PUMP, RTL], ids=["pumping", "emoji-rtl"])
def test_an_unrecognized_name_is_an_unidentified_substance_in_the_text(
        settings: Settings, raw: str) -> None:
    signal = _novel(raw)
    alert = _alert(settings, signal)
    assert alert.status == "approved"  # critical, auto-approved by policy: so it goes out
    for lang, text in alert.texts.items():
        assert "206" not in text and "http" not in text and "URGENT" not in text
        assert "LYNATNEF" not in text and "\u202e" not in text and "\U0001f48a" not in text
        assert is_gsm7(text) and segment_count(text) <= 2, (lang, text)
    assert "an unidentified substance found in 98104 (Seattle, WA)" in alert.texts["en"]
    assert "una sustancia no identificada" in alert.texts["es"]
    # the raw name stays where officials look: the signal (and its evidence)
    assert raw.strip()[:20] in signal.substance_name


def test_a_sold_as_label_the_catalog_does_not_know_stays_out_of_the_text(
        settings: Settings) -> None:
    signal = contamination_signal().model_copy(update={"sold_as_id": None,
                                                       "sold_as_name": PUMP})
    alert = _alert(settings, signal)
    assert "206" not in alert.texts["en"] and "sold as" not in alert.texts["en"]
    assert alert.texts["en"].startswith("Lookout ALERT (critical): Fentanyl found in 98104")
    known = contamination_signal().model_copy(update={"event_id": uuid.uuid4(),
                                                      "region_id": "us/wa/king-county/98101"})
    alert = _alert(settings, known)
    assert "in a sample sold as Cocaine" in alert.texts["en"]


def test_invisible_characters_are_stripped_and_a_non_gsm7_text_waits_for_review(
        settings: Settings) -> None:
    # a region name is ours (the catalogs), yet one with a character outside GSM-7 would
    # make a UCS-2 text: the policy leaves it for review instead of sending it
    signal = contamination_signal().model_copy(update={
        "region_name": f"Saint-J\u00e9r\u00f4me{INVISIBLE}"})
    alert = _alert(settings, signal)
    assert alert.status == "draft"
    assert not any(c in text for text in alert.texts.values() for c in INVISIBLE)
    assert text_block(alert.texts) == "text not GSM-7 (en)"


def test_dev_policy_approves_everything_but_a_text_that_is_not_short_gsm7(
        settings: Settings) -> None:
    dev = settings.model_copy(update={"env": "dev"})
    long_name = "Saint-Jerome " * 14  # GSM-7, but the text is over two segments
    signal = contamination_signal(severity="info").model_copy(
        update={"region_name": long_name})
    alert = _alert(dev, signal)
    assert alert.status == "draft" and alert.segments > 2
    ok = _alert(dev, contamination_signal(severity="info").model_copy(
        update={"event_id": uuid.uuid4(), "region_id": "us/wa/king-county/98101"}))
    assert ok.status == "approved"


def test_an_official_approves_a_non_gsm7_text_only_with_force(settings: Settings) -> None:
    signal = contamination_signal(severity="warning")  # not auto-approved: a draft
    alert = _alert(settings, signal)
    with session_scope(settings.sqlalchemy_url) as session:
        with pytest.raises(ProblemError) as refused:
            edit(session, alert.id, "ana", {"en": "Fentanyl \U0001f480 in 98104"})
        assert refused.value.status == 422 and "GSM-7" in refused.value.detail
        edited = edit(session, alert.id, "ana",
                              {"en": "Fentanyl \U0001f480\u202e in 98104"}, force=True)
        assert edited.texts["en"] == "Fentanyl \U0001f480 in 98104"  # bidi stripped
    with session_scope(settings.sqlalchemy_url) as session:
        with pytest.raises(ProblemError):
            approve(session, alert.id, "ana")
    with session_scope(settings.sqlalchemy_url) as session:
        assert approve(session, alert.id, "ana", force=True).status == "approved"
