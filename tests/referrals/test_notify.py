"""E-mail notices through the real smtplib against a minimal local SMTP server, and the
channel dispatch."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest

from services.referrals.notify import ChannelNotifier, EmailNotifier, NotifierError
from shared.settings import Settings


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        server: SmtpServer = self.server  # type: ignore[assignment]
        self.wfile.write(b"220 test ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                if verb == b"RCPT":
                    server.recipients.append(line.decode().strip())
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                server.messages.append(message_from_bytes(data))
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 no\r\n")


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Smtp)
        self.messages: list[Message] = []
        self.recipients: list[str] = []


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _settings(tmp_path: Path, port: int) -> Settings:
    return Settings(env="test", var_dir=tmp_path, referrals_smtp_host="127.0.0.1",
                    referrals_smtp_port=port)


def test_email_notice_is_sent_with_the_notice_as_json(smtp: SmtpServer, tmp_path: Path) -> None:
    notice = {"referral_id": "r-1", "service_name": "Harbor", "language": "es"}
    ChannelNotifier(_settings(tmp_path, smtp.server_address[1])).send(
        "email", "intake@harbor.example", notice)
    [message] = smtp.messages
    assert message["To"] == "intake@harbor.example"
    assert message["Subject"] == "Lookout referral r-1"
    assert json.loads(message.get_payload(decode=True)) == notice  # type: ignore[arg-type]
    assert [r.upper() for r in smtp.recipients] == ["RCPT TO:<INTAKE@HARBOR.EXAMPLE>"]


def test_email_failures_and_unknown_channels_are_notifier_errors(tmp_path: Path) -> None:
    with pytest.raises(NotifierError, match="not configured"):
        EmailNotifier(Settings(env="test", var_dir=tmp_path)).send("email", "a@b.example", {})
    with pytest.raises(NotifierError, match="e-mail failed"):
        EmailNotifier(_settings(tmp_path, 9)).send("email", "a@b.example", {})
    with pytest.raises(NotifierError, match="not supported"):
        ChannelNotifier(Settings(env="test", var_dir=tmp_path)).send("fax", "+12065550100", {})
