"""Which alerts are approved without review: the per-region policy
(LOOKOUT_ALERT_POLICY_JSON, else LOOKOUT_AUTO_APPROVE_SEVERITIES) and the text checks every
approval by policy makes."""

from __future__ import annotations

from services.alerts.service.common import MAX_SEGMENTS
from services.alerts.templates import alert_texts
from shared.events import ContaminationSignalV1, SpikeSignalV1
from shared.gsm import sms_text_problem, strip_invisible
from shared.region_prefix import longest_prefix
from shared.settings import AlertRegionPolicy, Settings

# Methods that confirm what a field test (FTIR, Raman, strips) found: a laboratory's
# chromatography with mass spectrometry (ingest's `Method` names).
CONFIRMATORY_METHODS = frozenset({"gc_ms", "lc_ms"})


# One region's policy: parsed and checked by the settings (LOOKOUT_ALERT_POLICY_JSON).
RegionPolicy = AlertRegionPolicy


def policy_for(settings: Settings, region_id: str) -> RegionPolicy:
    """The longest region prefix in LOOKOUT_ALERT_POLICY_JSON (the key "" matches every
    region), else LOOKOUT_AUTO_APPROVE_SEVERITIES."""
    policy = {k.strip("/"): v for k, v in (settings.alert_policy_json or {}).items()}
    best = longest_prefix(policy, region_id)
    if best is None:
        return RegionPolicy(severities=frozenset(settings.auto_approve_severities))
    return policy[best]


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
