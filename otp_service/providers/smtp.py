"""The SMTP provider (aiosmtplib), configured with Logto's SMTP connector JSON.

Failures are classified at this edge: a 4xx reply, a refused or dropped connection and a
timeout are transient; a 5xx reply, failed authentication and TLS verification are permanent.
"""

from __future__ import annotations

import asyncio
import re
import ssl

import aiosmtplib

from ..config import Config, PoolConfig
from ..config.smtp import SmtpConfig
from ..errors import PermanentProviderError, ProviderError, TransientProviderError
from ..message.compose import Message
from ..store.inbox import Inbox
from ..text.sanitize import strip_control
from .base import SendResult
from .mime import build_email
from .smtp_pool import SmtpPool, StartTlsUnavailable

NAME = "smtp"


_ENHANCED = re.compile(r"^\d\.\d{1,3}\.\d{1,3}\b")
# The server's own id for the message in its reply to DATA: Postfix "250 2.0.0 Ok: queued as
# 4Xyz", Exim "250 OK id=1tAbCd-000123-Ef"; many servers (aiosmtpd: "250 OK") give none.
_QUEUE_ID = re.compile(r"(?:queued as|\bid=)\s*([A-Za-z0-9][A-Za-z0-9._@-]{0,99})", re.IGNORECASE)


def queue_id(reply: str) -> str | None:
    """The queue id in the server's reply to DATA, or None when it names none."""
    found = _QUEUE_ID.search(reply)
    return found.group(1) if found else None


def _reply(code: int, text: str) -> ProviderError:
    if not 200 <= code < 600:  # aiosmtplib's -1: a line that is no SMTP reply at all
        # Garbage (a proxy, a load balancer, a half-dead server) says nothing about the
        # message: another attempt, on a new connection, may well work.
        return TransientProviderError(NAME, f"not an SMTP reply: {strip_control(text)[:120]}")
    detail = f"server replied {code}: {strip_control(text)[:200]}"
    enhanced = _ENHANCED.match(text.strip())  # RFC 3463 status, e.g. 5.7.1: short, no raw text
    reason = f"the mail server answered {code}" + (f" {enhanced.group(0)}" if enhanced else "")
    kind = TransientProviderError if 400 <= code < 500 else PermanentProviderError
    return kind(NAME, detail, reason=reason)


def classify(exc: BaseException) -> ProviderError:
    """Our error for an aiosmtplib, ssl or socket failure."""
    if isinstance(exc, aiosmtplib.SMTPConnectError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__  # implicit TLS: the handshake failed inside connect()
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = exc.recipients
        transient = all(400 <= r.code < 500 for r in refusals)
        first = refusals[0] if refusals else None
        detail = (
            f"recipient refused: {first.code} {strip_control(first.message)[:200]}"
            if first
            else "recipient refused"
        )
        reason = "the mail server refused the recipient" + (f" ({first.code})" if first else "")
        kind = TransientProviderError if transient else PermanentProviderError
        return kind(NAME, detail, reason=reason)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        # 454 (Gmail, Office 365: "too many login attempts") is worth another try; 535 is not.
        kind = TransientProviderError if 400 <= exc.code < 500 else PermanentProviderError
        return kind(NAME, f"authentication failed ({exc.code})")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPResponseException):
        return _reply(exc.code, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentProviderError(
            NAME, f"TLS certificate verification failed: {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError):
        return PermanentProviderError(NAME, f"TLS failed: {exc.reason}")
    if isinstance(exc, StartTlsUnavailable | aiosmtplib.SMTPNotSupported):
        return PermanentProviderError(NAME, str(exc))
    if isinstance(
        exc, aiosmtplib.SMTPConnectTimeoutError | aiosmtplib.SMTPTimeoutError | TimeoutError
    ):
        return TransientProviderError(NAME, "timed out talking to the SMTP server")
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
        return TransientProviderError(
            NAME,
            f"connection failed: {strip_control(str(exc))[:200]}",
            reason="could not connect to the mail server",
        )
    return PermanentProviderError(
        NAME, f"SMTP error: {strip_control(str(exc))[:200]}", reason="unexpected mail server error"
    )


class SmtpProvider:
    """Sends email through one SMTP server over pooled connections."""

    name = NAME

    def __init__(self, config: SmtpConfig, pool: PoolConfig, timeout: float = 30.0) -> None:
        self.config = config
        self.pool = SmtpPool(config, pool)
        self.timeout = timeout

    async def send(self, message: Message) -> SendResult:
        mail = build_email(message, self.config)
        options = ["SMTPUTF8"] if mail.smtputf8 else None
        try:
            async with asyncio.timeout(self.timeout):
                for fresh in (False, True):
                    reused = False
                    try:
                        async with self.pool.connection(fresh=fresh) as (smtp, reused):
                            reply = await smtp.send_one(
                                mail.sender, mail.recipient, mail.data, mail_options=options
                            )
                            return SendResult(self.name, "sent", queue_id(reply))
                    except (
                        aiosmtplib.SMTPServerDisconnected,
                        aiosmtplib.SMTPResponseException,
                    ) as exc:
                        # A pooled connection the server had closed, or was closing with 421
                        # (Postfix, Exim on idle): once more on a new connection.
                        code = getattr(exc, "code", None)
                        closing = code is None or code == 421
                        if fresh or not reused or not closing:
                            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError, StartTlsUnavailable) as exc:
            raise classify(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self.pool.close()


def build(config: Config, inbox: Inbox) -> SmtpProvider:
    """The provider of its registry entry, from ``email.smtp`` (imported when configured)."""
    smtp = config.email.section(SmtpConfig)
    assert smtp is not None  # guaranteed by config validation
    return SmtpProvider(smtp, config.email.pool, config.delivery.timeout_seconds)
