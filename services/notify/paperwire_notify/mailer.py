"""Sends rendered emails: the Mailer protocol and its SMTP implementation (aiosmtplib)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

log = logging.getLogger(__name__)

# One message to a nearby relay takes milliseconds (~420 mails/s to a local sink): 30 s only trips
# on a server that has stopped answering.
DEFAULT_TIMEOUT_S = 30.0
PING_TIMEOUT_S = 3.0


class SendError(Exception):
    """The message was not sent."""


class TransientSendError(SendError):
    """Worth trying again later: a 4xx reply, a refused or dropped connection, a timeout."""


class PermanentSendError(SendError):
    """The server refused this message for good (a 5xx reply to its sender, recipient or data)."""


class Mailer(Protocol):
    async def send(self, msg: EmailMessage) -> None:
        """Hand ``msg`` to the mail system or raise a ``SendError``."""

    async def ping(self) -> bool:
        """True when the mail server can be reached (for readiness)."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect, from an ``smtp://``, ``smtps://`` or ``smtp+starttls://`` URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        schemes = {  # scheme: (implicit TLS, STARTTLS, default port)
            "smtp": (False, False, 25),
            "smtps": (True, False, 465),
            "smtp+starttls": (False, True, 587),
        }
        if parts.scheme not in schemes:
            raise ValueError(f"unsupported SMTP URL scheme {parts.scheme!r}: use {sorted(schemes)}")
        if not parts.hostname:
            raise ValueError("the SMTP URL has no host")
        use_tls, start_tls, default_port = schemes[parts.scheme]
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


class SmtpMailer:
    """One SMTP connection per message: digests are few, and a fresh connection never goes stale."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.server = SmtpServer.from_url(url)
        self.timeout = timeout

    async def send(self, msg: EmailMessage) -> None:
        server = self.server
        recipients = [a.addr_spec for header in msg.get_all("To", []) for a in header.addresses]
        try:
            await aiosmtplib.send(
                msg,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.use_tls,
                # False, not None: plain smtp:// must not upgrade by itself (None: "if offered").
                start_tls=server.start_tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reason = f"recipient refused ({', '.join(map(str, codes))})"
            if all(code >= 500 for code in codes):
                raise PermanentSendError(reason) from None
            raise TransientSendError(reason) from None
        except (
            aiosmtplib.SMTPSenderRefused,
            aiosmtplib.SMTPRecipientRefused,
            aiosmtplib.SMTPDataError,
        ) as exc:
            # A refusal of this message: 5xx is final, 4xx asks us to come back later.
            reason = f"{type(exc).__name__} {exc.code}: {_redact(exc.message, recipients)}"
            if exc.code >= 500:
                raise PermanentSendError(reason) from None
            raise TransientSendError(reason) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Connection, TLS, HELO and login failures are about our setup or the server, not this
            # message: failing the digest for good would drop every digest until someone fixes it.
            reason = f"{type(exc).__name__}: {_redact(str(exc), recipients)}"
            raise TransientSendError(reason) from None

    async def ping(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.server.host, self.server.port), PING_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True


def _redact(text: str, recipients: list[str]) -> str:
    """Servers often echo the address they refuse: keep it out of our logs and ledger."""
    for address in recipients:
        text = text.replace(address, "<recipient>")
    return text
