"""The SMTP intake: an SMTP listener whose mail goes into the capture inbox, not anywhere else.

With ``capture.smtp: {host, port}`` an app (or a Logto still on its built-in SMTP connector) can
use otp-service as its mail catcher: each message is captured once per envelope recipient, with
its subject, text and HTML parts, its headers, and the one-time code found in it. No AUTH, no
TLS: it is meant for loopback or a private network, like Mailpit and MailDev.

Every client's work is bounded (docs/hostile-input.md): at most ``max_connections`` clients at
once (beyond, ``421`` and closed, so idle clients cannot take the process's descriptors), each
disconnected after ``idle_seconds`` of silence (cut off, if its answers are still unsent because
it does not read them); a DATA is read into one buffer and refused with ``552`` as soon as it
passes ``max_message_bytes`` (not at its end: nothing past the limit is read), and every
client's DATA together may hold at most ``max_buffered_bytes`` (beyond, ``452``). A message has
at most ``max_recipients`` recipients (beyond, ``452 4.5.3`` and the session goes on), and a
client gets at most :data:`COMMANDS_WITHOUT_MESSAGE` answers (plus one per recipient) between
two captured messages (beyond, ``421`` and closed), so a NOOP flood ends. A session lets the
event loop serve the others every :data:`YIELD_EVERY` answers: it otherwise answers every
command already buffered (one read of up to 256 KiB: 40,000 NOOPs) in one go, and a send waited
for it (6.4 s).

A complete mail is checked before it is parsed (:func:`too_complex`: the size of its headers,
its encoded words, addresses and MIME parts), then parsed off the event loop, one at a time,
within :data:`PARSE_SECONDS`: the stdlib parser is slow on hostile input, and a send must never
wait for it.

Its mail does not take the send path (:mod:`otp_service.delivery.send`): that path turns a
request into a message and delivers it (templates, abuse limits, a durable outbox, retries,
providers), while a mail catcher delivers nothing. The mail arrives composed, goes nowhere but
the inbox, and the SMTP client already holds it until we answer ``250``; the capture provider
at the end of the send path writes to the same inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..config import CaptureSmtpConfig
from ..message.compose import Message
from ..store.inbox import Inbox
from ..text.addresses import normalize_email
from ..text.codes import find_code
from ..text.htmltext import html_to_text
from ..text.ids import new_message_id

log = logging.getLogger("otp_service.intake")

MAX_HEADER_BYTES = 64 * 1024  # the header section of a mail (its top-level headers)
MAX_ENCODED_WORDS = 256  # =?charset?enc?...?= in the headers
MAX_ADDRESSES = 256  # "@" in the headers
MAX_PARTS = 100  # MIME parts (counted as lines that could be a boundary: "--" first)
PARSE_SECONDS = 10.0  # one mail's parsing, off the event loop
REFUSAL_LINGER_SECONDS = 1.0  # a refused DATA: how long what follows is read and dropped
YIELD_EVERY = 8  # answers a session gives before it lets the event loop serve the others
# Answers a client may get between two captured messages, on top of one per recipient: a real
# client needs a handful (EHLO, MAIL, RCPT..., DATA, the odd NOOP or RSET); past it, 421.
COMMANDS_WITHOUT_MESSAGE = 1000
SHOWN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID")
TYPE = "SMTP"  # the usage type of captured mail: a plain email does not say which it was
SOURCE = __name__.rpartition(".")[2]  # what the inbox shows it came from: this intake


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


def too_complex(data: bytes | bytearray) -> str | None:
    """Why ``data`` is refused before it is parsed, or None. The stdlib parser's work grows
    faster than the input with encoded words, addresses and parts (480 KB of encoded words
    once took 5.6 GB): these bounds keep a mail's parse to a fraction of a second."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    if len(head) > MAX_HEADER_BYTES:
        return f"its headers exceed {MAX_HEADER_BYTES // 1024} KiB"
    if head.count(b"=?") > MAX_ENCODED_WORDS:
        return f"its headers hold more than {MAX_ENCODED_WORDS} encoded words"
    if head.count(b"@") > MAX_ADDRESSES:
        return f"its headers hold more than {MAX_ADDRESSES} addresses"
    if data.count(b"\n--") > 2 * MAX_PARTS + 1:
        return f"it has more than {MAX_PARTS} MIME parts"
    return None


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
            source=SOURCE,
        )
        for rcpt in envelope_to
    ]


class _Handler:
    """aiosmtpd's handler: every accepted message goes to the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        # One parse at a time, in a thread: the loop keeps serving sends meanwhile.
        self.parser = ThreadPoolExecutor(1, thread_name_prefix="intake-parse")

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        envelope.original_content = envelope.content = None  # held once, by ``data`` below
        if not isinstance(data, bytes | bytearray):
            return "554 5.6.0 message could not be read"
        if (why := too_complex(data)) is not None:
            log.warning("SMTP intake: refused a message: %s", why)
            return f"554 5.6.0 message refused: {why}"
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.parser, messages_from, list(envelope.rcpt_tos), data)
        try:
            async with asyncio.timeout(PARSE_SECONDS):
                captured = await asyncio.shield(work)
        except TimeoutError:
            log.warning("SMTP intake: a message took over %g s to parse", PARSE_SECONDS)
            return "451 4.3.0 message took too long to read; not captured"
        except Exception:  # a message the parser chokes on must not kill the listener
            log.exception("SMTP intake: cannot parse a message from %s", session.peer)
            return "554 5.6.0 message could not be parsed"
        for message in captured:
            await self.inbox.add(message)
        log.info("SMTP intake: captured %d message(s) id=%s", len(captured),
                 ",".join(m.id for m in captured))  # fmt: skip
        return "250 2.0.0 captured"


def _libc_trim() -> Any:
    """glibc's ``malloc_trim``: hands freed heap memory back to the system (None elsewhere)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    return None


_TRIM = _libc_trim()
TRIM_AFTER_BYTES = 1024 * 1024


class _Budget:
    """Connections open and DATA bytes held, across every client of the intake."""

    def __init__(self, config: CaptureSmtpConfig) -> None:
        self.config = config
        self.connections = 0
        self.buffered = 0
        self.released = 0  # bytes released since the heap was last trimmed
        self.refused = 0


class _Refusal(asyncio.Protocol):
    """Past ``max_connections``: one ``421`` line, then closed (no descriptor kept)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"421 4.3.2 too many connections; try again later\r\n")
        transport.close()


class _Session(SMTP):
    """aiosmtpd's SMTP with a bounded DATA: read into one buffer, counted against the
    message limit and the intake's shared budget as it arrives, refused at once past either;
    a bounded number of recipients and of commands, and a turn for the other clients every
    few commands.

    Every command aiosmtpd reads, known or not, well-formed or not, is answered through
    :meth:`push`: that is where commands are counted and the loop is given its turns."""

    def __init__(self, handler: _Handler, budget: _Budget) -> None:
        config = budget.config
        super().__init__(
            handler,
            data_size_limit=config.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname="otp-service",
            ident="otp-service capture",
            timeout=config.idle_seconds,
        )
        self.budget = budget
        self.held = 0  # bytes of this client's DATA counted in the budget
        self.answers = 0  # answers given since the last captured message (or the greeting)
        self.max_answers = COMMANDS_WITHOUT_MESSAGE + config.max_recipients
        self.ending = False  # refused and closing: nothing more is read or answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.budget.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.budget.connections -= 1
        self._release()
        self._trim()
        super().connection_lost(error)

    def _release(self) -> None:
        """Give this client's DATA bytes back to the budget. When every DATA is released after
        large ones, the freed heap is returned to the system: otherwise clients that sent
        megabytes and hung up leave the process that much larger for good."""
        budget, held = self.budget, self.held
        budget.buffered -= held
        self.held = 0
        budget.released += held
        self._trim()

    def _trim(self) -> None:
        budget = self.budget
        if budget.buffered == 0 and budget.released >= TRIM_AFTER_BYTES and _TRIM is not None:
            budget.released = 0
            asyncio.get_running_loop().call_soon(_TRIM, 0)  # once the buffers are freed

    def _timeout_cb(self) -> None:
        """Idle (or refused) for ``idle_seconds``: closed, unless answers are still waiting to
        be sent: a client that does not read them would hold ``close()`` (and its place among
        ``max_connections``) for as long as it keeps its socket open, so it is cut off."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
            log.warning("SMTP intake: a client left its answers unread; disconnected")
            transport.abort()
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def push(self, status: AnyStr) -> None:
        if self.ending:  # refused: what aiosmtpd still reads is dropped unanswered, and the
            await asyncio.sleep(0)  # turn lets connection_lost end this session
            return
        if status[3:4] in ("-", b"-"):  # a line of a multiline reply (EHLO's): not counted
            await super().push(status)
            return
        self.answers += 1
        if self.answers > self.max_answers:
            log.warning("SMTP intake: a client sent %d commands without a message; closed",
                        self.max_answers)  # fmt: skip
            await self._refuse("421 4.7.0 too many commands without a message; closing")
            return
        await super().push(status)
        if self.answers % YIELD_EVERY == 0:  # the client's next commands may all be buffered
            await asyncio.sleep(0)

    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope = self.envelope
        limit = self.budget.config.max_recipients
        if envelope is not None and len(envelope.rcpt_tos) >= limit:
            await self.push("452 4.5.3 Too many recipients")  # RFC 5321 4.5.3.1.10
            return
        await super().smtp_RCPT(arg)

    async def _refuse(self, line: str) -> None:
        """Answer ``line`` and hang up (a refused DATA, or past the command cap): the rest of
        what the client sends is never kept or answered. Closing with the client's bytes unread
        would make the kernel send a reset, which can destroy the answer before the client
        reads it: so the answer is sent with our end of the stream, and what the client still
        sends is read and dropped for at most a second."""
        self._release()
        await super().push(line)
        self.ending = True
        transport = self.transport
        if transport is None:
            return
        if isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof():
            transport.write_eof()
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(REFUSAL_LINGER_SECONDS):
                    while dropped := await self._reader.read(65536):
                        self.budget.released += len(dropped)
        transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        budget, limit = self.budget, self.budget.config.max_message_bytes
        data = bytearray()
        try:
            while self.transport is not None and not self.ending:
                try:
                    line = await self._reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError:
                    data.clear()
                    await self._refuse("500 5.5.0 line too long (RFC 5321 4.5.3.1.6)")
                    return
                except asyncio.IncompleteReadError:
                    return  # the client hung up mid-DATA
                if line == b".\r\n":
                    break
                if len(data) + len(line) > limit:
                    data.clear()  # freed now, not after the refusal's linger
                    await self._refuse(f"552 5.3.4 message exceeds {limit} bytes; not captured")
                    return
                if budget.buffered + len(line) > budget.config.max_buffered_bytes:
                    budget.refused += 1
                    data.clear()
                    await self._refuse("452 4.3.1 too much mail in progress; try again later")
                    return
                budget.buffered += len(line)
                self.held += len(line)
                data += line[1:] if line.startswith(b".") else line  # RFC 5321 4.5.2
            else:
                return
            self.envelope.content = self.envelope.original_content = data  # type: ignore[assignment]
            del data
            status = await self._call_handler_hook("DATA")
        finally:
            self._release()
        if status.startswith("250"):
            self.answers = 0  # a message captured: the client may go on
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)


class SmtpIntake:
    """The listener: :meth:`start` binds ``host:port`` on the running loop, :meth:`stop` closes."""

    def __init__(self, config: CaptureSmtpConfig, inbox: Inbox) -> None:
        self.config = config
        self.handler = _Handler(inbox)
        self.budget = _Budget(config)
        self._server: asyncio.Server | None = None
        # A listening socket to serve instead of binding (``serve --workers``: the supervisor's
        # one listener, shared by every worker).
        self.sock: socket.socket | None = None

    def _protocol(self) -> asyncio.Protocol:
        if self.budget.connections >= self.config.max_connections:
            self.budget.refused += 1
            return _Refusal()
        return _Session(self.handler, self.budget)

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
        self.handler.parser.shutdown(wait=False, cancel_futures=True)
