"""SMTP pipelining (RFC 2920) against real aiosmtpd servers, with and without PIPELINING.

A server that offers it gets MAIL, RCPT and DATA in one read; one that does not gets them one
at a time; either way every failure reads as before (a refused recipient permanent, a 4xx
transient) and the connection is left clean for the next message, or closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.errors import PermanentProviderError, TransientProviderError
from otp_service.message.compose import Message, parse_request
from otp_service.providers.smtp import SmtpProvider
from otp_service.services import build_services

from .support.smtp_server import DROP, RecordingSMTPServer, ServerFactory, ca_pem

USER, PASSWORD = "otp-mailer", "pw-Secr3t-5f2a9c"
TEMPLATES = [
    {
        "usageType": usage,
        "contentType": "text/plain",
        "subject": "Your code",
        "content": "Your code is {{code}}.\n.\nA line that starts with a dot stays one.",
    }
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]
ENVELOPE = (b"MAIL FROM:", b"RCPT TO:", b"DATA\r\n")


class Sender:
    """The service's composer and SMTP provider for one server."""

    def __init__(self, server: RecordingSMTPServer, **smtp: Any) -> None:
        connector = {
            "host": "127.0.0.1", "port": server.port, "fromEmail": "no-reply@acme.example",
            "name": "otp.test.example", "templates": TEMPLATES, "connectionTimeout": 2000,
            "greetingTimeout": 2000, "socketTimeout": 2000, **smtp,
        }  # fmt: skip
        config = parse_config(
            {"email": {"provider": "smtp", "smtp": connector}, "templates": {"bundled": False}}
        )
        self.services = build_services(config)
        provider = self.services.dispatcher.email
        assert isinstance(provider, SmtpProvider)
        self.provider = provider

    def compose(self, to: str) -> Message:
        request = parse_request({"to": to, "type": "SignIn", "payload": {"code": "482913"}})
        return self.services.composer.compose("email", request)

    async def send(self, to: str = "ana@example.com") -> None:
        await self.provider.send(self.compose(to))


@pytest.fixture
async def sender(smtp_servers: ServerFactory) -> AsyncIterator[Callable[..., Sender]]:
    made: list[Sender] = []

    def make(server: RecordingSMTPServer, **smtp: Any) -> Sender:
        made.append(Sender(server, **smtp))
        return made[-1]

    yield make
    for item in made:
        await item.services.close()
    async with asyncio.timeout(2):
        while not smtp_servers.idle():  # noqa: ASYNC110 (the server's thread closes them)
            await asyncio.sleep(0.01)


async def test_pipelining_sends_envelope_in_one_read_when_offered(
    smtp_servers: ServerFactory, sender: Callable[..., Sender]
) -> None:
    """With PIPELINING, MAIL, RCPT and DATA arrive together and the message arrives intact."""
    server = smtp_servers(pipelining=True)
    mailer = sender(server)

    await mailer.send("one@example.com")
    await mailer.send("two@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["one@example.com"], ["two@example.com"]]
    assert server.connections[0].read_together(*ENVELOPE)
    assert b"Your code is 482913.\r\n.\r\nA line that starts" in server.messages[0].raw
    assert len(server.connections) == 1


async def test_pipelining_not_used_when_server_does_not_offer_it(
    smtp_servers: ServerFactory, sender: Callable[..., Sender]
) -> None:
    """Without PIPELINING each command waits for the previous reply, and mail still arrives."""
    server = smtp_servers(pipelining=False)
    mailer = sender(server)

    await mailer.send()

    assert [m.rcpt_tos for m in server.messages] == [["ana@example.com"]]
    assert not server.connections[0].read_together(b"MAIL FROM:", b"RCPT TO:")


async def test_pipelining_over_starttls_and_auth(
    smtp_servers: ServerFactory, sender: Callable[..., Sender]
) -> None:
    """After STARTTLS and AUTH, the envelope is pipelined inside TLS."""
    server = smtp_servers(
        pipelining=True, require_starttls=True, user=USER, password=PASSWORD, smtputf8=False
    )
    mailer = sender(
        server, requireTLS=True, tls={"ca": ca_pem()}, auth={"user": USER, "pass": PASSWORD}
    )

    await mailer.send()

    (received,) = server.messages
    assert received.tls and received.user == USER
    assert server.connections[0].read_together(*ENVELOPE)


BOTH = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "unpipelined"])


@BOTH
async def test_refused_recipient_is_permanent_and_connection_stays_usable(
    smtp_servers: ServerFactory, sender: Callable[..., Sender], pipelining: bool
) -> None:
    """RCPT 550 is a permanent failure; the next message goes out on the same connection."""
    server = smtp_servers(pipelining=pipelining)
    mailer = sender(server)
    server.reply_next("RCPT", "550 5.1.1 No such user")

    with pytest.raises(PermanentProviderError, match="recipient refused: 550"):
        await mailer.send("nobody@example.com")
    await mailer.send("ana@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["ana@example.com"]]
    assert len(server.connections) == 1 and server.attempts("RSET") == 1


@BOTH
async def test_4xx_on_mail_is_transient_and_connection_stays_usable(
    smtp_servers: ServerFactory, sender: Callable[..., Sender], pipelining: bool
) -> None:
    """MAIL 451 is transient (its RCPT and DATA replies are ignored); the connection is reused."""
    server = smtp_servers(pipelining=pipelining)
    mailer = sender(server)
    server.reply_next("MAIL", "451 4.3.0 Try again later")

    with pytest.raises(TransientProviderError, match="451"):
        await mailer.send("first@example.com")
    await mailer.send("second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["second@example.com"]]
    assert len(server.connections) == 1 and server.attempts("RSET") == 1


@BOTH
async def test_5xx_on_data_is_permanent_and_connection_stays_usable(
    smtp_servers: ServerFactory, sender: Callable[..., Sender], pipelining: bool
) -> None:
    """A 554 after the message is permanent; the next message goes out on the same connection."""
    server = smtp_servers(pipelining=pipelining)
    mailer = sender(server)
    server.reply_next("DATA", "554 5.7.1 Rejected as spam")

    with pytest.raises(PermanentProviderError, match="554"):
        await mailer.send("first@example.com")
    await mailer.send("second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["second@example.com"]]
    assert len(server.connections) == 1 and server.attempts("RSET") == 1


@BOTH
async def test_server_closing_mid_exchange_is_transient_and_next_message_reconnects(
    smtp_servers: ServerFactory, sender: Callable[..., Sender], pipelining: bool
) -> None:
    """The server hanging up after MAIL's reply is transient; the next message gets a new
    connection and arrives once."""
    server = smtp_servers(pipelining=pipelining)
    mailer = sender(server)
    server.reply_next("RCPT", DROP)

    with pytest.raises(TransientProviderError):
        await mailer.send("first@example.com")
    await mailer.send("second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["second@example.com"]]
    assert len(server.connections) == 2


@BOTH
async def test_421_on_mail_is_transient_and_connection_is_not_reused(
    smtp_servers: ServerFactory, sender: Callable[..., Sender], pipelining: bool
) -> None:
    """A 421 (the server is closing) is transient, and the next message opens a new connection."""
    server = smtp_servers(pipelining=pipelining)
    mailer = sender(server)
    server.reply_next("MAIL", "421 4.3.2 Shutting down")

    with pytest.raises(TransientProviderError, match="421"):
        await mailer.send("first@example.com")
    await mailer.send("second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["second@example.com"]]
    assert mailer.provider.pool.opened == 2
