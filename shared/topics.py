"""The topic registry: every Kafka topic, its partitions, its key and its value model."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from shared import events
from shared.settings import get_settings


def partitions_of(name: str) -> int:
    """A topic's partition count, from the settings (`LOOKOUT_KAFKA_PARTITIONS`, or per
    topic `LOOKOUT_KAFKA_TOPIC_PARTITIONS`)."""
    settings = get_settings()
    return int(settings.kafka_topic_partitions.get(name, settings.kafka_partitions))


@dataclass(frozen=True)
class Topic:
    name: str
    key: str  # what the message key holds
    model: type[BaseModel] | None  # None: a discriminated union, see `events`

    @property
    def partitions(self) -> int:
        return partitions_of(self.name)

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


DRUGCHECK_RESULTS = Topic("drugcheck.results.v1", "region_id", events.DrugCheckResultV1)
OVERDOSE_REPORTS = Topic("overdose.reports.v1", "region_id", events.OverdoseReportV1)
SIGNALS = Topic("signals.v1", "region_id", None)
SMS_OUTBOUND = Topic("sms.outbound.v1", "subscriber_id", events.SmsOutboundJobV1)
REFERRAL_REQUESTS = Topic("referrals.requests.v1", "contact_ref",
                          events.ReferralRequestedV1)
SMS_REQUESTS = Topic("sms.requests.v1", "contact_ref", events.SmsRequestedV1)
SMS_INBOUND = Topic("sms.inbound.v1", "contact_ref", events.SmsReceivedV1)
REFERRAL_EVENTS = Topic("referrals.events.v1", "referral_id", events.ReferralEventV1)
SITE_KEYS = Topic("sites.keys.v1", "key_id", events.SiteKeyChangedV1)
ALERT_EVENTS = Topic("alerts.events.v1", "alert_id", events.AlertChangedV1)
CONTACT_STOPS = Topic("contacts.stops.v1", "contact_ref", events.ContactStoppedV1)

ALL_TOPICS: tuple[Topic, ...] = (DRUGCHECK_RESULTS, OVERDOSE_REPORTS, SIGNALS, SMS_OUTBOUND,
                                 REFERRAL_REQUESTS, SMS_REQUESTS, SMS_INBOUND, REFERRAL_EVENTS,
                                 SITE_KEYS, ALERT_EVENTS, CONTACT_STOPS)

# Detection's novelty stage (docs/detection.md, "N workers"): its own internal topic, made
# by the detection Faust app like its changelogs (the `lookout-detection-` prefix its Kafka
# user owns), so not in ALL_TOPICS (no DLQ, nobody else reads or writes it).
DETECTION_NOVELTY = Topic("lookout-detection-novelty", "substance key", None)
INTERNAL_TOPICS: tuple[Topic, ...] = (DETECTION_NOVELTY,)


def topic_names(include_dlq: bool = True) -> list[str]:
    names = [t.name for t in ALL_TOPICS]
    if include_dlq:
        names += [t.dlq for t in ALL_TOPICS]
    return names
