"""The SMS interface and its two backends live in `shared.sms` (referrals texts providers
too); here they are bound to alerts' dev outbox table."""

from __future__ import annotations

from services.alerts.models import DevOutboxMessage
from shared import sms
from shared.settings import Settings
from shared.sms import (
    INVALID_NUMBER,
    REQUEST_TIMEOUT,
    UNSUBSCRIBED,
    Receipt,
    SmsBackend,
    SmsError,
    TwilioSmsBackend,
)

__all__ = ["INVALID_NUMBER", "REQUEST_TIMEOUT", "UNSUBSCRIBED", "OutboxSmsBackend", "Receipt",
           "SmsBackend", "SmsError", "TwilioSmsBackend", "make_backend"]


class OutboxSmsBackend(sms.OutboxSmsBackend):
    """The dev outbox in `alerts_dev_outbox` (shown on /dev/outbox)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, DevOutboxMessage)


def make_backend(settings: Settings) -> SmsBackend:
    return sms.make_backend(settings, DevOutboxMessage)
