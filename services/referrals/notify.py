"""Provider notices behind one small interface: webhook, e-mail, SMS, or a fake that records.

A notice is a JSON-able dict built from what the person consented to share; the notifier
only delivers it. SMS goes to the provider's own number (business contact data from the
directory) through the shared SMS backend (`shared.sms`: Twilio, or the dev outbox in
`referrals_dev_outbox`); alerts' `sms.requests.v1` is for people, addressed by contact_ref.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from services.referrals.models import DevSmsMessage
from services.referrals.texts import provider_notice_text
from shared.settings import Settings
from shared.sms import SmsError, make_backend


class NotifierError(RuntimeError):
    """The notice could not be delivered (recorded as `failed`; staff can follow up)."""


class ProviderNotifier(Protocol):
    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None: ...


class WebhookNotifier:
    """POSTs the notice as JSON to the provider's URL; any non-2xx answer is a failure."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        try:
            response = httpx.post(address, json=notice, timeout=self.timeout,
                                  headers={"User-Agent": "lookout-referrals/1"})
        except httpx.HTTPError as exc:
            raise NotifierError(f"webhook unreachable: {exc.__class__.__name__}") from exc
        if not 200 <= response.status_code < 300:
            raise NotifierError(f"webhook answered {response.status_code}")


class EmailNotifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        if not self.settings.referrals_smtp_host:
            raise NotifierError("e-mail is not configured (LOOKOUT_REFERRALS_SMTP_HOST)")
        message = EmailMessage()
        message["From"] = self.settings.referrals_smtp_from
        message["To"] = address
        message["Subject"] = f"Lookout referral {notice.get('referral_id', '')}"
        message.set_content(json.dumps(notice, indent=2, ensure_ascii=False))
        try:
            with smtplib.SMTP(self.settings.referrals_smtp_host, self.settings.referrals_smtp_port,
                              timeout=10) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifierError(f"e-mail failed: {exc.__class__.__name__}") from exc


class SmsNotifier:
    """Texts the notice to the provider's number (`LOOKOUT_SMS_BACKEND`: Twilio or the dev
    outbox). Called from worker threads and sync endpoints, so each send runs its own loop.
    Errors name Twilio's code, never the number."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        body = provider_notice_text(notice)
        try:
            asyncio.run(self._send(address, body))
        except SmsError as exc:
            reason = f"Twilio error {exc.code}" if exc.code else "SMS provider unreachable"
            if exc.unsubscribed:
                reason += " (the number has opted out: STOP)"
            raise NotifierError(f"sms failed: {reason}") from exc

    async def _send(self, to: str, body: str) -> None:
        backend = make_backend(self.settings, DevSmsMessage, status_callbacks=False)
        try:
            await backend.send(to, body)
        finally:
            await backend.close()


class ChannelNotifier:
    """Dispatches by the provider's channel."""

    def __init__(self, settings: Settings) -> None:
        self.by_channel: dict[str, ProviderNotifier] = {
            "webhook": WebhookNotifier(), "email": EmailNotifier(settings),
            "sms": SmsNotifier(settings)}

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        notifier = self.by_channel.get(channel)
        if notifier is None:
            raise NotifierError(f"channel {channel!r} is not supported")
        notifier.send(channel, address, notice)


class FakeNotifier:
    """Records every notice (tests); `fail` makes the next sends fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False

    def send(self, channel: str, address: str, notice: dict[str, Any]) -> None:
        if self.fail:
            raise NotifierError("fake failure")
        self.sent.append((channel, address, notice))
