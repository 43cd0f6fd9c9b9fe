"""A small pool of authenticated SMTP connections to one target.

Logto's own connector opens a connection (TCP, STARTTLS, AUTH) per message; we keep up to
``size`` connections open and reuse them, replacing those that went stale (idle too long, or
closed by the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiosmtplib

from ..config import PoolConfig
from ..config.smtp import SmtpConfig
from .smtp_pipeline import PipeliningSMTP

_TLS_VERSION = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class StartTlsUnavailable(Exception):
    """``requireTLS`` is set but the server does not offer STARTTLS."""


def tls_context(config: SmtpConfig) -> ssl.SSLContext:
    """An SSL context honouring the connector's ``tls`` options (raises ``ssl.SSLError``)."""
    tls = config.tls
    context = ssl.create_default_context(
        cafile=tls.ca_file, cadata="\n".join(tls.ca) if tls.ca else None
    )
    if not tls.reject_unauthorized:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        context.minimum_version = _TLS_VERSION[tls.min_version]
    if tls.max_version:
        context.maximum_version = _TLS_VERSION[tls.max_version]
    if tls.ciphers:
        context.set_ciphers(tls.ciphers)
    return context


def _refusal(exc: Exception) -> bool:
    """A well-formed 4xx/5xx refusal (not 421, the server closing): the connection is fine."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return True
    code = getattr(exc, "code", 0)
    return 400 <= code < 600 and code != 421


@dataclass
class _Idle:
    smtp: PipeliningSMTP
    since: float


class SmtpPool:
    """Connections to one SMTP target, at most ``size`` at a time."""

    def __init__(self, config: SmtpConfig, pool: PoolConfig) -> None:
        self.config = config
        self.pool = pool
        self.context = tls_context(config)
        self.local_hostname = config.name or socket.gethostname()
        self._idle: list[_Idle] = []
        self._slots = asyncio.Semaphore(pool.size)
        self.opened = 0  # connections opened over the pool's life, for tests and metrics

    async def _open_socket(self) -> socket.socket:
        """A connected TCP socket, so implicit TLS can use ``servername`` for SNI."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                if self.config.local_address:
                    sock.bind((self.config.local_address, 0))
                await loop.sock_connect(sock, address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"cannot resolve {self.config.host}")

    async def _connect(self) -> PipeliningSMTP:
        config = self.config
        connect_timeout = config.connection_timeout + config.greeting_timeout
        options: dict[str, object] = {}
        if config.secure and config.servername:
            async with asyncio.timeout(config.connection_timeout):
                sock = await self._open_socket()
            options = {"sock": sock, "hostname": config.servername}
        else:
            options = {"hostname": config.host, "port": config.port}
            if config.local_address:
                options["source_address"] = (config.local_address, 0)
        smtp = PipeliningSMTP(
            local_hostname=self.local_hostname,
            timeout=config.socket_timeout,
            use_tls=config.secure,
            start_tls=False,  # decided below, after EHLO, as nodemailer does
            tls_context=self.context,
            **options,  # type: ignore[arg-type]
        )
        await smtp.connect(timeout=connect_timeout)
        try:
            if not config.secure and not config.ignore_tls:
                await smtp.ehlo()
                if smtp.supports_extension("starttls"):
                    await smtp.starttls(
                        server_hostname=config.servername or config.host,
                        tls_context=self.context,
                    )
                elif config.require_tls:
                    raise StartTlsUnavailable("the server does not offer STARTTLS (requireTLS)")
            auth = config.auth
            if auth is not None and auth.user:
                if auth.type == "oauth2":
                    await smtp.auth_xoauth2(auth.user, auth.access_token or "")
                else:
                    await smtp.login(auth.user, auth.password or "")

        except BaseException:
            smtp.close()
            raise
        self.opened += 1
        return smtp

    def _take_idle(self) -> PipeliningSMTP | None:
        now = time.monotonic()
        while self._idle:
            idle = self._idle.pop()
            if idle.smtp.is_connected and now - idle.since < self.pool.max_idle_seconds:
                return idle.smtp
            idle.smtp.close()
        return None

    @contextlib.asynccontextmanager
    async def connection(
        self, *, fresh: bool = False
    ) -> AsyncIterator[tuple[PipeliningSMTP, bool]]:
        """A ready connection and whether it was reused; it returns to the pool on success."""
        async with self._slots:
            smtp = None if fresh else self._take_idle()
            reused = smtp is not None
            if smtp is None:
                smtp = await self._connect()
            try:
                yield smtp, reused
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                # A refusal: the send reset the envelope (RSET) or closed the connection.
                if smtp.is_connected and _refusal(exc):
                    self._idle.append(_Idle(smtp, time.monotonic()))
                else:
                    smtp.close()
                raise
            except BaseException:
                smtp.close()
                raise
            if smtp.is_connected:
                self._idle.append(_Idle(smtp, time.monotonic()))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for item in idle:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await item.smtp.quit()
            item.smtp.close()
