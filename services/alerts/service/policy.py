"""Which alerts are approved without review: the per-region policy
(LOOKOUT_ALERT_POLICY_JSON, else LOOKOUT_AUTO_APPROVE_SEVERITIES) and the text checks every
approval by policy makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from services.alerts.service.common import MAX_SEGMENTS, SEVERITY_RANK
from services.alerts.templates import alert_texts
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.gsm import sms_text_problem, strip_invisible
from shared.region_prefix import longest_prefix
from shared.settings import Settings

# Methods that confirm what a field test (FTIR, Raman, strips) found: a laboratory's
# chromatography with mass spectrometry (ingest's `Method` names).
CONFIRMATORY_METHODS = frozenset({"gc_ms", "lc_ms"})


@dataclass(frozen=True)
class RegionPolicy:
    """Which new alerts of a region are approved without review.

    severities: the severities approved by policy;
    lab_confirmed: a contamination alert also needs its substance identified by a
      confirmatory method (`CONFIRMATORY_METHODS`); overdose spikes name no substance, so
      severity alone decides for them;
    as_sold_novel: a `novel_substance` signal for exactly what the sample was sold as
      (cocaine in a sample sold as cocaine) may be approved too; by default it goes to review;
    second_reviewer: a critical alert reviewed by officials needs the approvals of two
      different reviewers, the second not the author of the last edit of its text.
    """

    severities: frozenset[str]
    lab_confirmed: bool = False
    as_sold_novel: bool = False
    second_reviewer: bool = False


def _region_policy(value: Any) -> RegionPolicy:
    if isinstance(value, dict):
        unknown = set(value) - {"severities", "lab_confirmed", "as_sold_novel",
                                "second_reviewer"}
        if unknown:
            raise ValueError(f"LOOKOUT_ALERT_POLICY_JSON: unknown option(s) {sorted(unknown)}")
        policy = RegionPolicy(frozenset(value.get("severities", ())),
                              bool(value.get("lab_confirmed", False)),
                              bool(value.get("as_sold_novel", False)),
                              bool(value.get("second_reviewer", False)))
    else:
        policy = RegionPolicy(frozenset(value))
    if not policy.severities <= set(SEVERITY_RANK):
        raise ValueError(f"LOOKOUT_ALERT_POLICY_JSON: unknown severities "
                         f"{sorted(policy.severities - set(SEVERITY_RANK))}")
    return policy


@cache
def _policy(raw: str) -> dict[str, RegionPolicy]:
    return {str(k).strip("/"): _region_policy(v)
            for k, v in json.loads(raw).items()} if raw else {}


def policy_for(settings: Settings, region_id: str) -> RegionPolicy:
    """The longest region prefix in LOOKOUT_ALERT_POLICY_JSON (the key "" matches every
    region), else LOOKOUT_AUTO_APPROVE_SEVERITIES."""
    policy = _policy(settings.alert_policy_json)
    best = longest_prefix(policy, region_id)
    if best is None:
        return RegionPolicy(frozenset(settings.auto_approve_severities))
    return policy[best]


def check_policy(settings: Settings) -> None:
    """Raise ValueError on a malformed LOOKOUT_ALERT_POLICY_JSON (the worker checks at
    start, so a typo never sends a signal to the dead-letter topic)."""
    _policy(settings.alert_policy_json)


def lab_confirmed(signal: ContaminationSignalV1 | SpikeSignalV1) -> bool:
    return isinstance(signal, ContaminationSignalV1) and \
        bool(CONFIRMATORY_METHODS.intersection(signal.identified_by))


def as_sold_novel(signal: ContaminationSignalV1 | SpikeSignalV1) -> bool:
    """A substance new to the region that is exactly what the sample was sold as: worth a
    look by the team, not a text to everyone."""
    return isinstance(signal, ContaminationSignalV1) and signal.pattern == "novel_substance" \
        and signal.sold_as_id is not None and signal.sold_as_id == signal.substance_id


def text_block(texts: dict[str, str]) -> str | None:
    """Why these texts may not go out without review (not GSM-7, over MAX_SEGMENTS), or
    None. Every approval by policy checks it; an official may `force` past it."""
    for lang, text in sorted(texts.items()):
        problem = sms_text_problem(strip_invisible(text), MAX_SEGMENTS)
        if problem:
            return f"text {problem} ({lang})"
    return None


def approval_block(settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1,
                   severity: str | None = None) -> str | None:
    """Why the policy leaves this signal's alert (at `severity`, default the signal's) for
    review, or None when it is approved by policy. In LOOKOUT_ENV=dev everything is approved
    except an as-sold novel substance and a text that is not short GSM-7."""
    policy = policy_for(settings, signal.region_id)
    blocked_text = text_block(alert_texts(
        signal.model_copy(update={"severity": severity}) if severity else signal))
    if blocked_text:
        return blocked_text
    if as_sold_novel(signal) and not policy.as_sold_novel:
        return "novel substance as sold"
    if settings.env == "dev":
        return None
    if (severity or signal.severity) not in policy.severities:
        return "severity"
    if policy.lab_confirmed and isinstance(signal, ContaminationSignalV1) and \
            not lab_confirmed(signal):
        return "not lab-confirmed"
    return None


def auto_approves(settings: Settings, signal: ContaminationSignalV1 | SpikeSignalV1,
                  severity: str | None = None) -> bool:
    return approval_block(settings, signal, severity) is None
