"""A pool of authenticated SMTP connections to one target that follows demand.

Logto's own connector opens a connection (TCP, STARTTLS, AUTH) per message: five to seven
round trips before the message's own. This pool reuses connections: a message takes an idle
one; when none is idle and fewer than the ceiling (``size``) are open, it opens one; else it
waits for one to come back. Idle connections close after ``max_idle_seconds``, except
``keep_warm`` of them, which send a NOOP every ``keepalive_seconds`` (at most ``max_noops`` in a
row, then they are replaced: servers count such commands). A connection the server closed is
replaced. When the server refuses a new connection (a 421 greeting, a refused or reset TCP
connection) while others are open, it has said how many it takes: the ceiling drops to the
connections open for ``limit_backoff_seconds``, and the message waits for one of those.

A new connection resumes the TLS session of an earlier one to the same server name when the
server allows it (session tickets or ids): an abbreviated handshake, no certificate to send
and verify again (:class:`ResumingContext`).
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


class ResumingContext(ssl.SSLContext):
    """A client context that offers each new connection the TLS session last saved for its
    server name, so the server may resume it instead of a full handshake.

    asyncio's TLS layer, which aiosmtplib uses for implicit TLS and STARTTLS alike, makes each
    connection's TLS object with ``context.wrap_bio(...)`` and has no way to pass a saved
    session; this override sets it on the new object before the handshake. A session is only
    offered to the exact ``server_hostname`` it was saved for: resuming skips the certificate
    check, which the saved session passed for that name, with this context's trust settings.
    Python refuses a session from another context. The server decides: it resumes, or runs a
    full handshake with the usual verification (``session_reused`` tells which).
    """

    def __init__(self, protocol: int) -> None:  # protocol: taken by SSLContext.__new__
        super().__init__()
        self._sessions: dict[str | None, ssl.SSLSession] = {}

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        ssl_object = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if session is None and not server_side:
            # Keyed by the object's own (IDNA-encoded) name, as remember() saved it.
            saved = self._sessions.get(ssl_object.server_hostname)
            if saved is not None:
                ssl_object.session = saved
        return ssl_object

    def remember(self, ssl_object: ssl.SSLObject | None) -> None:
        """Save a connection's session for the next connection to the same server name.

        Call it after the server's first reply over TLS: a TLS 1.3 server sends its session
        ticket after the handshake, so a session taken at the handshake cannot be resumed.
        A connection that resumed the saved session leaves it in place while it is less than
        half its lifetime old: reading a session copies it (about 0.1 ms, CPython serialises
        it with the peer's certificates), which would eat most of what resuming saves.
        """
        if ssl_object is None or ssl_object.server_side:
            return
        name = ssl_object.server_hostname
        saved = self._sessions.get(name)
        if (
            saved is not None
            and ssl_object.session_reused
            and time.time() < saved.time + saved.timeout / 2
        ):
            return
        session = ssl_object.session
        if session is not None and (session.has_ticket or session.id):
            self._sessions[name] = session


def _client_context(cafile: str | None, cadata: str | None) -> ResumingContext:
    """What ``ssl.create_default_context(cafile=..., cadata=...)`` returns, as a
    :class:`ResumingContext`: its protocol, flags, options and verification settings, and the
    same trust loaded the same way (tests/test_smtp_tls_sessions.py compares the two)."""
    reference = ssl.create_default_context(cafile=cafile, cadata=cadata)
    context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.options = reference.options
    context.verify_flags = reference.verify_flags
    context.verify_mode = reference.verify_mode
    context.check_hostname = reference.check_hostname
    context.keylog_filename = reference.keylog_filename
    if cafile or cadata:
        context.load_verify_locations(cafile=cafile, cadata=cadata)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def tls_context(config: SmtpConfig) -> ResumingContext:
    """An SSL context honouring the connector's ``tls`` options (raises ``ssl.SSLError``)."""
    tls = config.tls
    context = _client_context(tls.ca_file, "\n".join(tls.ca) if tls.ca else None)
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
    since: float  # last message, or when opened
    noops: int = 0  # NOOPs sent since the last message
    checked: float = 0.0  # last NOOP


def _server_limit(exc: BaseException) -> bool:
    """Whether a failed connect is the server turning us away (not down, not misconfigured)."""
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return exc.code == 421
    return isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionError)


class SmtpPool:
    """Connections to one SMTP target, at most ``size`` (or a lowered ceiling) at a time."""

    def __init__(self, config: SmtpConfig, pool: PoolConfig) -> None:
        self.config = config
        self.pool = pool
        self.context = tls_context(config)
        self.local_hostname = config.name or socket.gethostname()
        self._idle: list[_Idle] = []
        self._open = 0  # connections open or opening, idle or in use
        self._changed = asyncio.Condition()
        self._limit, self._limit_until = pool.size, 0.0
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False
        self.opened = 0  # connections opened over the pool's life, for tests and metrics
        self.limited = 0  # times the server's refusal lowered the ceiling
        self.resumed = 0  # connections that resumed an earlier one's TLS session

    @property
    def ceiling(self) -> int:
        """How many connections may be open now: ``size``, or less after a server refusal."""
        if self._limit_until and time.monotonic() >= self._limit_until:
            self._limit, self._limit_until = self.pool.size, 0.0
        return self._limit

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        """Connections ready for a message now (not in use, not being kept warm)."""
        return len(self._idle)

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
            ssl_object = self._ssl_object(smtp)
        except BaseException:
            smtp.close()
            raise
        self.opened += 1
        if ssl_object is not None and ssl_object.session_reused:
            self.resumed += 1
        return smtp

    @staticmethod
    def _ssl_object(smtp: PipeliningSMTP) -> ssl.SSLObject | None:
        ssl_object = smtp.get_transport_info("ssl_object")
        return ssl_object if isinstance(ssl_object, ssl.SSLObject) else None

    def _take_idle(self) -> PipeliningSMTP | None:
        while self._idle:
            idle = self._idle.pop()  # the most recently used: the others may go idle and close
            if idle.smtp.is_connected:  # expiry is the keeper's (_keep) decision
                return idle.smtp
            idle.smtp.close()
            self._open -= 1
        return None

    async def _acquire(self, fresh: bool) -> PipeliningSMTP | None:
        """An idle connection, or None after reserving room for a new one (the caller opens)."""
        async with self._changed:
            while True:
                if fresh and self._idle and self._open >= self.ceiling:
                    self._idle.pop(0).smtp.close()  # make room for the new connection asked for
                    self._open -= 1
                smtp = None if fresh else self._take_idle()
                if smtp is not None:
                    return smtp
                if self._open < self.ceiling:
                    self._open += 1
                    return None
                await self._changed.wait()

    async def _release(self, smtp: PipeliningSMTP | None, keep: bool) -> None:
        async with self._changed:
            if keep and smtp is not None and smtp.is_connected and self._open <= self.ceiling:
                self._idle.append(_Idle(smtp, time.monotonic()))
            else:
                if smtp is not None:
                    smtp.close()
                self._open -= 1
            self._changed.notify()
        if self._keeper is None and not self._closed:
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    def _lower_ceiling(self) -> bool:
        """After the server turned a new connection away: whether others are open to use."""
        others = self._open - 1  # the one that failed is still counted
        if others < 1 or self.pool.limit_backoff_seconds <= 0:
            return False
        self._limit = min(self.ceiling, others)
        self._limit_until = time.monotonic() + self.pool.limit_backoff_seconds
        self.limited += 1
        return True

    @contextlib.asynccontextmanager
    async def connection(
        self, *, fresh: bool = False
    ) -> AsyncIterator[tuple[PipeliningSMTP, bool]]:
        """A ready connection and whether it was reused; it returns to the pool after a send
        or a refusal (the envelope was reset), and is closed after any other failure."""
        while True:
            smtp = await self._acquire(fresh)
            reused = smtp is not None
            if smtp is not None:
                break
            try:
                smtp = await self._connect()
                break
            except BaseException as exc:
                limited = _server_limit(exc) and self._lower_ceiling()
                await asyncio.shield(self._release(None, False))
                if not limited:
                    raise
                fresh = False  # wait for one of the connections the server does take
        keep = False
        try:
            try:
                yield smtp, reused
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                keep = _refusal(exc)  # the send reset the envelope (RSET) or closed it
                raise
            keep = True
            if not reused and smtp.is_connected:
                # A new connection's session, once the server answered over TLS: a TLS 1.3
                # ticket comes after the handshake (and AUTH is not always there to wait for).
                self.context.remember(self._ssl_object(smtp))
        finally:
            await asyncio.shield(self._release(smtp, keep))

    async def _keep(self) -> None:
        """Close connections idle too long; keep ``keep_warm`` open with NOOP, within limits."""
        pool = self.pool
        period = min(pool.max_idle_seconds, pool.keepalive_seconds) / 2
        while not self._closed:
            await asyncio.sleep(period)
            now = time.monotonic()
            expired: list[_Idle] = []
            async with self._changed:
                # Oldest first: the most recently used ones are the warm ones.
                self._idle.sort(key=lambda item: item.since)
                spare = len(self._idle) - pool.keep_warm
                for item in list(self._idle):
                    stale = not item.smtp.is_connected
                    if stale or (spare > 0 and now - item.since >= pool.max_idle_seconds):
                        self._idle.remove(item)
                        expired.append(item)
                        spare -= 1
                self._open -= len(expired)
                warm = [
                    item
                    for item in self._idle
                    if now - max(item.since, item.checked) >= pool.keepalive_seconds
                ]
                for item in warm:
                    self._idle.remove(item)  # in use by the keeper: nobody else takes it
                self._changed.notify(len(expired))
            for item in expired:
                await self._quit(item.smtp)
            for item in warm:
                await self._refresh(item)

    async def _refresh(self, item: _Idle) -> None:
        """NOOP a kept-warm connection; past ``max_noops``, replace it with a new one."""
        smtp: PipeliningSMTP | None = item.smtp
        try:
            if item.noops >= self.pool.max_noops:
                await self._quit(item.smtp)
                smtp = await self._connect()
                item = _Idle(smtp, time.monotonic())
            else:
                async with asyncio.timeout(self.config.socket_timeout):
                    await item.smtp.noop()
                item.noops += 1
                item.checked = time.monotonic()
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError):
            if smtp is not None:
                smtp.close()
            smtp = None
        async with self._changed:
            if smtp is not None and smtp.is_connected and not self._closed:
                self._idle.append(item)
            else:
                self._open -= 1
            self._changed.notify()

    async def _quit(self, smtp: PipeliningSMTP) -> None:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(2):
                await smtp.quit()
        smtp.close()

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for item in idle:
            await self._quit(item.smtp)
