"""A recording SMTP server for tests: real aiosmtpd on a free local port.

It speaks real SMTP (its own thread and event loop, as aiosmtpd's ``Controller`` runs it) and
records what a mail server would see: each TCP connection with its EHLO names, STARTTLS and
AUTH, each command attempt, and each accepted message's envelope and raw bytes. Options cover
what the SMTP provider has to cope with: STARTTLS (optionally required) or implicit TLS with a
``trustme`` test CA, AUTH LOGIN/PLAIN and XOAUTH2, SMTPUTF8 on or off, a short idle timeout,
scripted replies to the next MAIL/RCPT/DATA (``451``, ``550`` ... or :data:`DROP`, which closes
the connection without answering) and restarts on the same port.

Start one with :func:`smtp_server_factory` (wrap it in a fixture, see there) or use
:class:`RecordingSMTPServer` as a context manager.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from .ports import HOST, free_port

SERVER_NAME = "mx.test.example"  # the server's own name (banner and EHLO reply)
TLS_NAMES = ("127.0.0.1", "localhost")  # names in the server certificate
DROP = "<drop the connection without replying>"  # a scripted "reply" for MAIL, RCPT or DATA


@functools.cache
def testing_ca() -> trustme.CA:
    """One test CA for the whole run (key generation is the slow part)."""
    return trustme.CA()


@functools.cache
def _server_cert() -> trustme.LeafCert:
    return testing_ca().issue_cert(*TLS_NAMES)


def ca_pem() -> str:
    """The test CA certificate as PEM text, as an admin pastes it into ``tls.ca``."""
    return testing_ca().cert_pem.bytes().decode("ascii")


def server_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _server_cert().configure_cert(context)
    return context


@dataclass
class Connection:
    """One TCP connection as the server saw it."""

    number: int
    tls: bool = False  # implicit TLS, or upgraded with STARTTLS
    tls_resumed: bool = False  # the TLS handshake resumed an earlier session (seen at EHLO)
    ehlo: list[str] = field(default_factory=list)  # the names the client gave in EHLO/HELO
    commands: list[str] = field(default_factory=list)  # "EHLO", "STARTTLS", "AUTH LOGIN", ...
    users: list[str] = field(default_factory=list)  # users that authenticated successfully
    closed: bool = False
    reads: list[bytes] = field(default_factory=list)  # the bytes of each read, as they came

    def read_together(self, *parts: bytes) -> bool:
        """Whether one read held all ``parts`` (commands the client pipelined)."""
        return any(all(part in chunk for part in parts) for chunk in self.reads)


@dataclass
class Received:
    """A message the server accepted (or swallowed before a :data:`DROP`)."""

    connection: int
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    raw: bytes
    tls: bool
    user: str | None

    @property
    def message(self) -> EmailMessage:
        """The raw bytes parsed with the modern email policy (headers decoded)."""
        return cast(EmailMessage, message_from_bytes(self.raw, policy=default_policy))

    @property
    def header_block(self) -> bytes:
        """The header section exactly as it came over the wire."""
        return self.raw.split(b"\r\n\r\n", 1)[0]


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, reporting connections and STARTTLS to the recorder."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.recorder = handler
        self.record: Connection | None = None
        self.gone = asyncio.Event()  # set by connection_lost (the server's loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        fresh = self.transport is None  # STARTTLS calls this again with the TLS transport
        super().connection_made(transport)
        if fresh:
            self.record = self.recorder.connected(self, transport)

    def data_received(self, data: bytes) -> None:
        if self.record is not None:
            self.record.reads.append(data[:512])
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        if self.record is not None:
            self.recorder.disconnected(self)
        self.gone.set()
        super().connection_lost(error)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.record is not None:
            self.record.commands.append("STARTTLS")
        await super().smtp_STARTTLS(arg)
        if self.record is not None and self._tls_protocol is not None:
            self.record.tls = True


class _Handler:
    """The aiosmtpd handler: records everything and plays scripted replies."""

    def __init__(self, server: RecordingSMTPServer) -> None:
        self.server = server

    # connection bookkeeping (called from _RecordingSMTP)

    def connected(self, smtp: _RecordingSMTP, transport: asyncio.BaseTransport) -> Connection:
        server = self.server
        with server.lock:
            record = Connection(
                number=len(server.connections) + 1,
                tls=transport.get_extra_info("ssl_object") is not None,
            )
            server.connections.append(record)
            server.sessions.append(smtp)
            server.live.add(smtp)
            server.peak_open = max(server.peak_open, len(server.live))
        return record

    def disconnected(self, smtp: _RecordingSMTP) -> None:
        with self.server.lock:
            self.server.live.discard(smtp)
            if smtp.record is not None:
                smtp.record.closed = True

    # SMTP hooks

    async def handle_EHLO(
        self, smtp: _RecordingSMTP, session: Any, envelope: Any, hostname: str, responses: Any
    ) -> Any:
        if smtp.record is not None:
            smtp.record.commands.append("EHLO")
            smtp.record.ehlo.append(hostname)
            ssl_object = smtp.transport.get_extra_info("ssl_object") if smtp.transport else None
            if ssl_object is not None:  # the handshake is over once the client speaks again
                smtp.record.tls_resumed = ssl_object.session_reused
        session.host_name = hostname
        if self.server.pipelining:  # aiosmtpd reads commands line by line: pipelining works
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_NOOP(self, smtp: _RecordingSMTP, session: Any, envelope: Any, arg: str) -> str:
        if smtp.record is not None:
            smtp.record.commands.append("NOOP")
        return "250 OK"

    async def handle_RSET(self, smtp: _RecordingSMTP, session: Any, envelope: Any) -> str:
        if smtp.record is not None:
            smtp.record.commands.append("RSET")
        return "250 OK"

    async def handle_MAIL(
        self, smtp: _RecordingSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = await self._scripted(smtp, "MAIL")
        if reply is not None:
            return reply
        if self.server.user is not None and not (smtp.record and smtp.record.users):
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, smtp: _RecordingSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = await self._scripted(smtp, "RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, smtp: _RecordingSMTP, session: Any, envelope: Any) -> str:
        record = smtp.record
        received = Received(
            connection=record.number if record else 0,
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            raw=envelope.original_content,
            tls=record.tls if record else False,
            user=record.users[-1] if record and record.users else None,
        )
        reply = self.server.next_reply("DATA")
        if reply is None or reply == DROP or reply.startswith("2"):
            # A DROP models a server that took the message and died before answering.
            with self.server.lock:
                self.server.messages.append(received)
        if record is not None:
            record.commands.append("DATA")
        return await self._answer(smtp, reply)

    async def _scripted(self, smtp: _RecordingSMTP, verb: str) -> str | None:
        if smtp.record is not None:
            smtp.record.commands.append(verb)
        reply = self.server.next_reply(verb)
        return None if reply is None else await self._answer(smtp, reply)

    async def _answer(self, smtp: _RecordingSMTP, reply: str | None) -> str:
        if reply == DROP:
            assert smtp.transport is not None
            smtp.transport.close()
            # connection_lost cancels this session's task; never answer.
            await asyncio.get_running_loop().create_future()
        return reply or "250 OK"

    # AUTH (LOGIN and PLAIN arrive through the authenticator; XOAUTH2 is a handler mechanism)

    def authenticate(
        self, smtp: _RecordingSMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user, password = data.login.decode(), data.password.decode()
        ok = (user, password) == (self.server.user, self.server.password)
        return self._auth_result(smtp, mechanism, user, ok)

    async def auth_XOAUTH2(self, smtp: _RecordingSMTP, args: list[str]) -> AuthResult:
        user, token = "", ""
        if len(args) == 2:
            with contextlib.suppress(ValueError):
                fields = base64.b64decode(args[1], validate=True).decode().split("\x01")
                for item in fields:
                    key, _, value = item.partition("=")
                    if key == "user":
                        user = value
                    elif key == "auth" and value.startswith("Bearer "):
                        token = value.removeprefix("Bearer ")
        ok = bool(self.server.token) and (user, token) == (self.server.user, self.server.token)
        return self._auth_result(smtp, "XOAUTH2", user, ok)

    def _auth_result(self, smtp: _RecordingSMTP, mechanism: str, user: str, ok: bool) -> AuthResult:
        record = smtp.record
        if record is not None:
            record.commands.append(f"AUTH {mechanism}")
            if ok:
                record.users.append(user)
        with self.server.lock:
            self.server.auth_attempts.append((mechanism, user, ok))
        # handled=False: aiosmtpd then answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


class _Controller(Controller):
    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.recording_handler = handler

    def factory(self) -> _RecordingSMTP:
        return _RecordingSMTP(self.recording_handler, **self.SMTP_kwargs)


class RecordingSMTPServer:
    """A real SMTP server on ``127.0.0.1:port`` that records what it sees.

    ``starttls``: offer STARTTLS with the test CA's certificate; ``require_starttls``: refuse
    mail before it. ``implicit_tls``: TLS from the first byte (port 465 style). ``user`` with
    ``password`` (LOGIN/PLAIN, limited to ``auth_mechanisms``) or ``token`` (XOAUTH2): require
    AUTH (offered only over TLS unless ``auth_require_tls`` is False). ``smtputf8``: advertise
    SMTPUTF8. ``idle_timeout``: seconds before the server drops a silent connection.
    ``pipelining``: advertise PIPELINING (RFC 2920), which aiosmtpd itself does not.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        hostname: str = SERVER_NAME,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        auth_mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN", "XOAUTH2"),
        auth_require_tls: bool = True,
        smtputf8: bool = True,
        idle_timeout: float = 30.0,
        pipelining: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.hostname = hostname
        self.starttls = starttls or require_starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.user, self.password, self.token = user, password, token
        self.auth_mechanisms = auth_mechanisms
        self.auth_require_tls = auth_require_tls
        self.smtputf8 = smtputf8
        self.idle_timeout = idle_timeout
        self.pipelining = pipelining

        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.messages: list[Received] = []
        self.auth_attempts: list[tuple[str, str, bool]] = []
        self.live: set[_RecordingSMTP] = set()
        # Every session of the running controller, its own start-up check's included: all their
        # transports are closed before its loop is (one left open is a ResourceWarning whenever
        # the garbage collector finds its StreamWriter, in whichever test runs then).
        self.sessions: list[_RecordingSMTP] = []
        self.peak_open = 0
        self._script: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._controller: _Controller | None = None

    # scripting

    def reply_next(self, verb: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` ``verb`` commands (MAIL, RCPT, DATA) with ``reply``.

        ``reply`` is a full SMTP reply line such as ``"451 4.3.0 Try again later"``, or
        :data:`DROP` to close the connection without answering (after DATA, the message has
        been received: the client cannot tell whether it was delivered).
        """
        verb = verb.upper()
        if verb not in ("MAIL", "RCPT", "DATA"):
            raise ValueError(f"cannot script {verb}")
        with self.lock:
            self._script[verb].extend([reply] * times)

    def next_reply(self, verb: str) -> str | None:
        with self.lock:
            queue = self._script[verb]
            return queue.popleft() if queue else None

    def attempts(self, verb: str) -> int:
        """How many times clients sent ``verb`` (MAIL, RCPT, DATA, EHLO, STARTTLS ...)."""
        with self.lock:
            return sum(c.commands.count(verb) for c in self.connections)

    # lifecycle

    def start(self) -> RecordingSMTPServer:
        handler = _Handler(self)
        kwargs: dict[str, Any] = {
            "hostname": HOST,  # the address to bind
            "port": self.port,
            "server_hostname": self.hostname,  # the name it announces; spares a getfqdn()
            "enable_SMTPUTF8": self.smtputf8,
            "timeout": self.idle_timeout,
            "ready_timeout": 5.0,
        }
        if self.implicit_tls:
            kwargs["ssl_context"] = server_tls_context()
        if self.starttls:
            kwargs["tls_context"] = server_tls_context()
            kwargs["require_starttls"] = self.require_starttls
        if self.user is not None:
            # handle_MAIL insists on AUTH: aiosmtpd's own auth_required warns (an error in this
            # suite) when combined with auth_require_tls=False, which implicit TLS needs
            # (aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH).
            kwargs["auth_require_tls"] = self.auth_require_tls and not self.implicit_tls
            kwargs["authenticator"] = handler.authenticate
            known = ("LOGIN", "PLAIN", "XOAUTH2")
            kwargs["auth_exclude_mechanism"] = [m for m in known if m not in self.auth_mechanisms]
        controller = _Controller(handler, **kwargs)
        before = len(self.connections)
        controller.start()
        self._controller = controller
        # Controller.start() opened a connection of its own (and read the banner, so it is
        # recorded by now) to check the server answers: it is not a client's.
        with self.lock:
            del self.connections[before:]
            self.live.clear()
            self.peak_open = 0
        return self

    def disconnect_all(self, reply: str | None = None) -> None:
        """Close every open connection from the server side, as an idle timeout does.

        ``reply``: a last line to send first, as Postfix's ``421 4.4.2 ... timeout exceeded``.
        """
        controller = self._controller
        if controller is None:
            return

        async def close_all() -> None:
            with self.lock:
                live = list(self.live)
            for smtp in live:
                if smtp.transport is not None:
                    if reply is not None:
                        cast(asyncio.WriteTransport, smtp.transport).write(reply.encode() + b"\r\n")
                    smtp.transport.close()
            if live:
                await asyncio.wait_for(asyncio.gather(*(smtp.gone.wait() for smtp in live)), 2)

        asyncio.run_coroutine_threadsafe(close_all(), controller.loop).result(timeout=5)

    def _close_leftovers(self) -> None:
        """Close any transport of any session still open (the controller's own start-up
        check, one past STARTTLS whose plain transport lingers), in the server's loop."""
        controller = self._controller
        if controller is None:
            return

        async def close_rest() -> None:
            with self.lock:
                sessions, self.sessions = list(self.sessions), []
            for smtp in sessions:
                for transport in (smtp.transport, getattr(smtp, "_original_transport", None)):
                    if transport is not None and not transport.is_closing():
                        transport.close()
            await asyncio.sleep(0.01)  # let the closes run before the loop stops

        asyncio.run_coroutine_threadsafe(close_rest(), controller.loop).result(timeout=5)

    def stop(self) -> None:
        """Close every connection and stop listening; :meth:`start` listens again."""
        if self._controller is None:
            return
        self.disconnect_all()
        self._close_leftovers()
        self._controller.stop()
        self._controller = None

    def restart(self) -> None:
        """Stop and start on the same port: clients' open connections are cut."""
        self.stop()
        self.start()

    def __enter__(self) -> RecordingSMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerFactory:
    """Starts :class:`RecordingSMTPServer` instances and remembers them for clean-up."""

    def __init__(self) -> None:
        self.started: list[RecordingSMTPServer] = []

    def __call__(self, **options: Any) -> RecordingSMTPServer:
        server = RecordingSMTPServer(**options).start()
        self.started.append(server)
        return server

    def idle(self) -> bool:
        """Whether every started server has seen all its connections closed."""
        return all(not server.live for server in self.started)

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@contextlib.contextmanager
def smtp_server_factory() -> Iterator[ServerFactory]:
    """A :class:`ServerFactory` whose servers are all stopped on exit.

    In a test module::

        @pytest.fixture
        def smtp_servers() -> Iterator[ServerFactory]:
            with smtp_server_factory() as make:
                yield make
    """
    factory = ServerFactory()
    try:
        yield factory
    finally:
        factory.stop_all()
