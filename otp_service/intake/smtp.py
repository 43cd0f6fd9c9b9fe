"""The SMTP intake: an SMTP listener whose mail goes into the capture inbox, not anywhere else.

With ``capture.smtp: {host, port}`` an app (or a Logto still on its built-in SMTP connector) can
use otp-service as its mail catcher: each message is captured once per envelope recipient, with
its subject, text and HTML parts, its headers, and the one-time code found in it. No AUTH, no
TLS: it is meant for loopback or a private network, like Mailpit and MailDev.

Its mail does not take the send path (:mod:`otp_service.delivery.send`): that path turns a
request into a message and delivers it (templates, abuse limits, a durable outbox, retries,
providers), while a mail catcher delivers nothing. The mail arrives composed, goes nowhere but
the inbox, and the SMTP client already holds it until we answer ``250``; the capture provider
at the end of the send path writes to the same inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..config import CaptureSmtpConfig
from ..message.compose import Message
from ..store.inbox import Inbox
from ..text.addresses import normalize_email
from ..text.codes import find_code
from ..text.htmltext import html_to_text
from ..text.ids import new_message_id

log = logging.getLogger("otp_service.intake")

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")
TYPE = "SMTP"  # the usage type of captured mail: a plain email does not say which it was


def _body(mail: EmailMessage, subtype: str) -> str | None:
    part = mail.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else None


def _recipient(address: str) -> str:
    try:
        return normalize_email(address)
    except ValueError:  # captured as given: this is a catcher, not a gate
        return address


def messages_from(envelope_to: list[str], data: bytes) -> list[Message]:
    """One captured :class:`Message` per envelope recipient of the raw RFC 5322 ``data``."""
    mail = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(mail, EmailMessage)
    html = _body(mail, "html")
    text = _body(mail, "plain")
    if text is None:
        text = html_to_text(html) if html is not None else ""
    subject = str(mail.get("Subject", "")) or None
    headers: dict[str, str] = {}
    for name in SHOWN_HEADERS:
        values = mail.get_all(name)
        if values:
            headers[name] = ", ".join(str(v) for v in values)
    locale = str(mail.get("Content-Language", "")).split(",")[0].strip()
    code = find_code(subject, text)
    created_at = datetime.now(UTC)  # arrival: the Date header only tells the sender's clock
    return [
        Message(
            id=new_message_id(),
            channel="email",
            to=_recipient(rcpt),
            type=TYPE,
            locale=locale,
            text=text,
            subject=subject,
            html=html,
            code=code,
            headers=headers,
            created_at=created_at,
        )
        for rcpt in envelope_to
    ]


class _Handler:
    """aiosmtpd's handler: every accepted message goes to the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        if not isinstance(data, bytes):
            return "554 5.6.0 message could not be read"
        try:
            captured = messages_from(list(envelope.rcpt_tos), data)
        except Exception:  # a message the parser chokes on must not kill the listener
            log.exception("SMTP intake: cannot parse a message from %s", session.peer)
            return "554 5.6.0 message could not be parsed"
        for message in captured:
            await self.inbox.add(message)
        log.info("SMTP intake: captured %d message(s) id=%s", len(captured),
                 ",".join(m.id for m in captured))  # fmt: skip
        return "250 2.0.0 captured"


class SmtpIntake:
    """The listener: :meth:`start` binds ``host:port`` on the running loop, :meth:`stop` closes."""

    def __init__(self, config: CaptureSmtpConfig, inbox: Inbox) -> None:
        self.config = config
        self.handler = _Handler(inbox)
        self._server: asyncio.Server | None = None
        # A listening socket to serve instead of binding (``serve --workers``: the supervisor's
        # one listener, shared by every worker).
        self.sock: socket.socket | None = None

    def _protocol(self) -> SMTP:
        return SMTP(
            self.handler,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            hostname="otp-service",
            ident="otp-service capture",
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is not None:
            self._server = await loop.create_server(self._protocol, sock=self.sock)
        else:
            self._server = await loop.create_server(
                self._protocol, self.config.host, self.config.port
            )
        log.info("SMTP intake listening on %s:%d", self.config.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the system chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.config.port
        address: Any = self._server.sockets[0].getsockname()
        return int(address[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Newer Pythons also wait for open connections here; an idle client must not hold
            # the shutdown (its connection ends with the process).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self._server.wait_closed()
            self._server = None
