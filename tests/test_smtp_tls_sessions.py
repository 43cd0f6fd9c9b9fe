"""TLS session resumption in the SMTP pool, against real aiosmtpd servers with TLS.

A new pooled connection offers the TLS session of an earlier one to the same server name, so
the server can resume it (an abbreviated handshake) instead of a full one; over STARTTLS and
implicit TLS, TLS 1.2 and 1.3 (whose tickets arrive after the handshake). A session is never
offered to another server name, and the context verifies certificates exactly as
``ssl.create_default_context`` does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme

from otp_service.config import parse_config
from otp_service.config.smtp import SmtpConfig
from otp_service.providers.smtp_pool import ResumingContext, tls_context

from .support.mailer import TEMPLATES, Mailer
from .support.smtp_server import ServerFactory, ca_pem

USER, PASSWORD = "otp-mailer", "pw-Secr3t-5f2a9c"
VERSIONS = pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])


def connector(port: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "fromEmail": "no-reply@acme.example",
        "name": "otp.test.example", "templates": TEMPLATES, "socketTimeout": 5000,
        "tls": {"ca": ca_pem()},
    }  # fmt: skip
    data.update(overrides)
    return data


@pytest.fixture
async def mailers(smtp_servers: ServerFactory) -> AsyncIterator[Callable[..., Mailer]]:
    made: list[Mailer] = []

    def make(smtp: dict[str, Any]) -> Mailer:
        made.append(Mailer(smtp))
        return made[-1]

    yield make
    for mailer in made:
        await mailer.provider.close()
    async with asyncio.timeout(5):
        while not smtp_servers.idle():  # noqa: ASYNC110 (another thread closes them)
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)  # TLS shutdowns finish a few loop iterations later


async def open_second_connection(mailer: Mailer) -> None:
    """One message (the first connection), then two at once: the second opens a connection."""
    await mailer.send("ana@example.com")
    await asyncio.gather(mailer.send("bo@example.com"), mailer.send("cy@example.com"))


# STARTTLS after the greeting (requireTLS), or TLS from the first byte (secure: true).
TLS_MODES = pytest.mark.parametrize(
    ("server_mode", "connector_mode"),
    [
        ({"require_starttls": True}, {"requireTLS": True}),
        ({"implicit_tls": True}, {"secure": True}),
    ],
    ids=["starttls", "implicit"],
)


@VERSIONS
@TLS_MODES
async def test_second_tls_connection_resumes_tls_session(
    smtp_servers: ServerFactory,
    mailers: Callable[..., Mailer],
    version: str,
    server_mode: dict[str, bool],
    connector_mode: dict[str, bool],
) -> None:
    """Over STARTTLS or implicit TLS, with AUTH, a second connection resumes the first one's
    TLS session."""
    server = smtp_servers(**server_mode, user=USER, password=PASSWORD)
    mailer = mailers(
        connector(
            server.port, **connector_mode, auth={"user": USER, "pass": PASSWORD},
            tls={"ca": ca_pem(), "minVersion": version, "maxVersion": version},
        )
    )  # fmt: skip
    await open_second_connection(mailer)

    assert len(server.messages) == 3
    assert mailer.pool.opened == 2
    assert mailer.pool.resumed == 1
    assert [c.tls_resumed for c in server.connections] == [False, True]
    assert all(c.users == [USER] for c in server.connections)  # AUTH still ran on each


@VERSIONS
async def test_second_starttls_connection_without_auth_resumes_tls_session(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer], version: str
) -> None:
    """Without AUTH no reply comes over TLS while connecting; the session is saved after the
    first message instead (TLS 1.3 tickets arrive after the handshake), and resumed."""
    server = smtp_servers(require_starttls=True)
    mailer = mailers(
        connector(server.port, tls={"ca": ca_pem(), "minVersion": version, "maxVersion": version})
    )
    await open_second_connection(mailer)

    assert len(server.messages) == 3
    assert [c.tls_resumed for c in server.connections] == [False, True]
    assert mailer.pool.resumed == 1


async def test_tls_session_is_not_offered_to_another_server_name(
    smtp_servers: ServerFactory,
) -> None:
    """A session saved for one name is never offered to another, even on the same server
    (which would accept it): the other name gets a full handshake and its own verification."""
    server = smtp_servers(implicit_tls=True)
    context = tls_context(smtp_config(connector(server.port, secure=True)))

    async def connect(name: str) -> ssl.SSLObject:
        smtp = aiosmtplib.SMTP(
            hostname=name, port=server.port, use_tls=True, tls_context=context, timeout=5
        )
        await smtp.connect()
        await smtp.ehlo()
        ssl_object = smtp.get_transport_info("ssl_object")
        context.remember(ssl_object)
        await smtp.quit()
        return ssl_object

    assert not (await connect("localhost")).session_reused
    assert not (await connect("127.0.0.1")).session_reused  # saved for localhost only
    assert (await connect("localhost")).session_reused
    assert [c.tls_resumed for c in server.connections] == [False, False, True]


async def test_saved_session_does_not_spare_another_server_verification(
    smtp_servers: ServerFactory,
) -> None:
    """A session saved for a name is offered to whatever answers at that name next; a server
    that cannot resume it (another one, with a certificate from a CA we do not trust) gets a
    full handshake, and its certificate fails verification as without sessions."""
    server = smtp_servers(implicit_tls=True)
    context = tls_context(smtp_config(connector(server.port, secure=True)))
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=server.port, use_tls=True, tls_context=context, timeout=5
    )
    await smtp.connect()
    await smtp.ehlo()
    context.remember(smtp.get_transport_info("ssl_object"))
    await smtp.quit()

    impostor = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(impostor)
    accepted: list[asyncio.BaseTransport] = []
    banner = lambda: _Banner(accepted)  # noqa: E731
    listener = await asyncio.get_running_loop().create_server(banner, "127.0.0.1", 0, ssl=impostor)
    try:
        port = listener.sockets[0].getsockname()[1]
        stranger = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=5
        )
        with pytest.raises(aiosmtplib.SMTPConnectError) as failed:
            await stranger.connect()
        assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        for transport in accepted:  # the server's side of the refused handshake
            transport.abort()
        listener.close()
        await listener.wait_closed()
        await asyncio.sleep(0.05)  # closing transports close a few loop iterations later


class _Banner(asyncio.Protocol):
    """An SMTP greeting and nothing more (the client never gets past the handshake)."""

    def __init__(self, accepted: list[asyncio.BaseTransport]) -> None:
        self.accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.accepted.append(transport)
        transport.write(b"220 impostor.example ESMTP\r\n")


def smtp_config(smtp: dict[str, Any]) -> SmtpConfig:
    config = parse_config({"email": {"provider": "smtp", "smtp": smtp}})
    assert config.email.smtp is not None
    return config.email.smtp


def settings(context: ssl.SSLContext) -> dict[str, Any]:
    return {
        "protocol": context.protocol,
        "options": context.options,
        "verify_flags": context.verify_flags,
        "verify_mode": context.verify_mode,
        "check_hostname": context.check_hostname,
        "minimum_version": context.minimum_version,
        "maximum_version": context.maximum_version,
        "ca_certs": context.get_ca_certs(binary_form=True),
        "ciphers": [cipher["name"] for cipher in context.get_ciphers()],
        "stats": context.cert_store_stats(),
        "post_handshake_auth": context.post_handshake_auth,
        "keylog_filename": context.keylog_filename,
    }


@pytest.mark.parametrize(
    "tls",
    [
        {"ca": "CA"},
        {"caFile": "CA"},
        {},
        {"ca": "CA", "rejectUnauthorized": False},
        {"ca": "CA", "minVersion": "TLSv1.3", "ciphers": "ECDHE+AESGCM"},
    ],
)
def test_tls_context_verifies_as_the_default_context_does(
    tls: dict[str, Any], tmp_path: Path
) -> None:
    """The resuming context has the settings and trust ssl.create_default_context gives."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(ca_pem())
    options = {k: (str(ca_file) if k == "caFile" else ca_pem()) if v == "CA" else v
               for k, v in tls.items()}  # fmt: skip
    config = smtp_config(connector(25, tls=options))
    ours = tls_context(config)

    expected = ssl.create_default_context(
        cafile=str(ca_file) if "caFile" in tls else None,
        cadata=ca_pem() if "ca" in tls else None,
    )
    if tls.get("rejectUnauthorized") is False:
        expected.check_hostname = False
        expected.verify_mode = ssl.CERT_NONE
    if "minVersion" in tls:
        expected.minimum_version = ssl.TLSVersion.TLSv1_3
    if "ciphers" in tls:
        expected.set_ciphers(tls["ciphers"])
    assert isinstance(ours, ResumingContext)
    assert settings(ours) == settings(expected)


async def test_burst_of_new_connections_all_resume_the_saved_session(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer]
) -> None:
    """After one message, a burst that opens three more connections resumes on all three:
    a resumed connection keeps the saved session, which later ones resume again."""
    server = smtp_servers(implicit_tls=True)
    mailer = mailers(connector(server.port, secure=True))
    await mailer.send("ana@example.com")
    await asyncio.gather(*(mailer.send(f"user{i}@example.com") for i in range(4)))
    await asyncio.gather(*(mailer.send(f"more{i}@example.com") for i in range(4)))

    assert len(server.messages) == 9
    assert [c.tls_resumed for c in server.connections] == [False, True, True, True]
    assert mailer.pool.resumed == 3
