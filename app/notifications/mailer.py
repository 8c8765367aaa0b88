"""Sending mail: over SMTP (aiosmtplib); with no SMTP host configured, not at all (notices wait
in the outbox), or into the log when `TESSERA_MAIL_LOG_ONLY` says so.

A send either returns (the server accepted the message), or raises `PermanentFailure` (the
server refused this message for good: a 5xx reply to the recipient or the data) or
`TransientFailure` (anything worth trying again: 4xx replies, a refused or lost connection, a
timeout, and errors of our own configuration such as a failed login or a refused sender, which
are fixed once for all messages rather than by dropping them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Protocol

import aiosmtplib

from app.config import Settings
from app.notifications.messages import Email

log = logging.getLogger("tessera.mail")


class DeliveryFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:1000]


class TransientFailure(DeliveryFailure):
    """Try again later."""


class PermanentFailure(DeliveryFailure):
    """The server refused this message for good (RFC 5321 §4.2.1: 5yz is a permanent
    negative completion reply)."""


class Sender(Protocol):
    async def send(self, email: Email) -> None: ...


class Mailer(Protocol):
    def connection(self) -> contextlib.AbstractAsyncContextManager[Sender]:
        """One connection for a batch of messages."""
        ...


def classify(exc: BaseException) -> DeliveryFailure:
    """Map what aiosmtplib raised to: retry, or record as failed."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        if codes and all(500 <= code < 600 for code in codes):
            return PermanentFailure(f"recipient refused: {text}")
        return TransientFailure(f"recipient refused for now: {text}")
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        kind = "recipient" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "message"
        if 500 <= exc.code < 600:
            return PermanentFailure(f"{kind} refused: {exc.code} {exc.message}")
        return TransientFailure(f"{kind} refused for now: {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # HELO, AUTH, MAIL FROM, STARTTLS: about our configuration, not this message.
        return TransientFailure(f"{type(exc).__name__}: {exc.code} {exc.message}")
    return TransientFailure(f"{type(exc).__name__}: {exc}")


def build(email: Email, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    if email.message_id:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "tessera.invalid"
        msg["Message-ID"] = f"<{email.message_id}@{domain}>"
    msg.set_content(email.body)
    return msg


class _SmtpSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self._settings
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        return aiosmtplib.SMTP(
            hostname=s.smtp_host, port=s.smtp_port, use_tls=s.smtp_tls,
            start_tls=s.smtp_starttls, username=s.smtp_username or None,
            password=password if s.smtp_username else None, timeout=s.smtp_timeout_seconds,
        )

    async def send(self, email: Email) -> None:
        message = build(email, self._settings.smtp_from)
        try:
            if self._client is None or not self._client.is_connected:
                client = self._new_client()
                await client.connect()
                self._client = client
            await self._client.send_message(message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self.close()  # a fresh connection for the next message
            raise classify(exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        if settings.smtp_tls and settings.smtp_starttls:
            raise ValueError("TESSERA_SMTP_TLS (implicit TLS) and TESSERA_SMTP_STARTTLS "
                             "exclude each other")
        self._settings = settings

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Sender]:
        sender = _SmtpSender(self._settings)
        try:
            yield sender
        finally:
            await sender.close()


class LogMailer:
    """`TESSERA_MAIL_LOG_ONLY=true` and no SMTP host: each mail is one log line (recipient and
    subject) and counts as delivered (`logged`). For trying Tessera out; never the default, or
    notices would be lost once SMTP is configured.

    Notices carry no secret: a token appears only by its name and last four characters."""

    async def send(self, email: Email) -> None:
        log.warning("mail not sent (log only, TESSERA_MAIL_LOG_ONLY): to %s: %s", email.to,
                    email.subject)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Sender]:
        yield self


def from_settings(settings: Settings) -> Mailer | None:
    """The mailer the settings name; None: no SMTP host, so notices wait in the outbox."""
    if settings.smtp_host:
        return SmtpMailer(settings)
    return LogMailer() if settings.mail_log_only else None
