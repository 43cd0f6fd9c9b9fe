"""SMTP command pipelining (RFC 2920) on aiosmtplib's connection.

aiosmtplib writes one command and waits for its reply, so a message costs four round trips
(MAIL, RCPT, DATA, the body). When the server offers ``PIPELINING``, :class:`PipeliningSMTP`
writes ``MAIL FROM``, ``RCPT TO`` and ``DATA`` in one go and reads their three replies
together, then sends the body: two round trips. Without the extension it sends as aiosmtplib
does.

Failures read exactly as aiosmtplib's ``sendmail`` raises them (``SMTPSenderRefused``,
``SMTPRecipientsRefused``, ``SMTPDataError``, ``SMTPServerDisconnected``, timeouts), checked
in command order, so the provider classifies them as before. After a refusal the envelope is
reset with ``RSET``; a server that answered ``354`` to ``DATA`` although the envelope failed
gets an empty message first (RFC 2920 section 3.1). A 421, a lost connection, a timeout or a
reply nobody asked for closes the connection: it is never reused out of step.

aiosmtplib's protocol parses one reply per chunk of received data and drops data that arrives
while a parsed reply waits to be picked up, so it cannot read replies sent back to back (on
Python 3.11 even two TCP segments in a row can lose one). :class:`PipeliningProtocol` extends
it: while a pipelined exchange runs it keeps every byte and queues every complete reply; at any
other time it is aiosmtplib's protocol unchanged. :class:`PipeliningSMTP` puts it in place
right after connecting.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse

_OK = 250
_RCPT_OK = (250, 251)
_START_INPUT = 354
_CLOSING = 421


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol that can also read several replies to commands written together."""

    _batch: collections.deque[SMTPResponse] | None = None  # replies read, during an exchange
    _batch_error: BaseException | None = None
    _batch_wakeup: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self._batch_wakeup is not None and not self._batch_wakeup.done():
            self._batch_wakeup.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._batch is None:
            super().data_received(data)
            return
        self._buffer.extend(data)
        try:
            while (reply := self._read_response_from_buffer()) is not None:
                self._batch.append(reply)
            if len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
        except Exception as exc:  # a malformed or endless reply: aiosmtplib's own errors
            del self._buffer[:]
            self._batch_error = exc
        self._wake()

    def eof_received(self) -> bool:
        if self._batch is not None and self._batch_error is None:
            self._batch_error = aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
            self._wake()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._batch is not None and self._batch_error is None:
            self._batch_error = aiosmtplib.SMTPServerDisconnected("Connection lost")
            self._wake()
        super().connection_lost(exc)

    async def _next_reply(self) -> SMTPResponse:
        while not self._batch:
            if self._batch_error is not None:
                raise self._batch_error
            self._batch_wakeup = self._loop.create_future()
            await self._batch_wakeup
        return self._batch.popleft()

    async def exchange(
        self,
        payload: bytes,
        count: int,
        timeout: float | None,  # noqa: ASYNC109 (aiosmtplib's own convention, per command)
    ) -> list[SMTPResponse]:
        """Write ``payload`` (one or more commands) and read ``count`` replies.

        Fewer replies come back only when the server closed the connection after sending at
        least one (a 421 before hanging up); with none, the disconnection is raised. Raises
        ``SMTPReadTimeoutError`` after ``timeout`` seconds without all of them.
        """
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        replies: list[SMTPResponse] = []
        async with self._command_lock:
            self._batch, self._batch_error = collections.deque(), None
            try:
                self.write(payload)
                async with asyncio.timeout(timeout):
                    while len(replies) < count:
                        replies.append(await self._next_reply())
                if self._batch or self._buffer:  # more than was asked for: out of step
                    raise aiosmtplib.SMTPResponseException(-1, "Unexpected data from server")
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from exc
            except aiosmtplib.SMTPServerDisconnected:
                if not replies:
                    raise
            finally:
                self._batch, self._batch_wakeup = None, None
        return replies


def _command(*parts: bytes) -> bytes:
    for part in parts:
        if COMMAND_INJECTION_REGEX.search(part):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(parts) + b"\r\n"


def _check(replies: Sequence[SMTPResponse], sender: str, recipient: str) -> None:
    """Raise what aiosmtplib's ``sendmail`` raises for the first failed reply, in order."""
    names = ("MAIL", "RCPT", "DATA")
    for name, reply in zip(names, replies, strict=False):
        if name == "MAIL" and reply.code != _OK:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
        if name == "RCPT" and reply.code not in _RCPT_OK:
            refused = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
            raise aiosmtplib.SMTPRecipientsRefused([refused])
        if name == "DATA" and reply.code != _START_INPUT:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    if len(replies) < len(names):
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")


def _codes(exc: BaseException) -> list[int]:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return [r.code for r in exc.recipients]
    return [getattr(exc, "code", 0)]


class PipeliningSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, sending a message in two round trips where the server pipelines."""

    async def _create_connection(self, timeout: float | None) -> SMTPResponse:  # noqa: ASYNC109
        response = await super()._create_connection(timeout)
        if self.protocol is not None and type(self.protocol) is SMTPProtocol:
            # The same object, given the extra reading mode (no state to convert: it adds
            # class-level defaults only). aiosmtplib offers no hook to choose its protocol.
            self.protocol.__class__ = PipeliningProtocol
        return response

    @property
    def pipelining(self) -> bool:
        """Whether the server offered PIPELINING in its last EHLO reply."""
        return self.supports_extension("pipelining") and isinstance(
            self.protocol, PipeliningProtocol
        )

    async def send_one(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        mail_options: Iterable[str] | None = None,
    ) -> str:
        """Send one message to one recipient; the server's reply to the message (its text)."""
        await self._ehlo_or_helo_if_needed()
        if not self.pipelining:
            _, reply = await self.sendmail(sender, [recipient], message, mail_options=mail_options)
            return reply
        options = list(mail_options or ())
        utf8 = any(option.lower() == "smtputf8" for option in options)
        if utf8 and not self.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8" if utf8 else "ascii"
        body = normalize_message_line_endings(message)
        if self.supports_extension("size"):
            options.insert(0, f"SIZE={len(body)}")
        envelope = (
            _command(
                b"MAIL",
                b"FROM:" + quote_address(sender).encode(encoding),
                *(option.encode("ascii") for option in options),
            )
            + _command(b"RCPT", b"TO:" + quote_address(recipient).encode(encoding))
            + b"DATA\r\n"
        )
        body = PERIOD_REGEX.sub(b"..", body) + b".\r\n"
        if self._sendmail_lock is None:
            self._sendmail_lock = asyncio.Lock()
        async with self._sendmail_lock:
            return await self._transaction(envelope, body, sender, recipient)

    async def _transaction(self, envelope: bytes, body: bytes, sender: str, recipient: str) -> str:
        protocol = self.protocol
        if not isinstance(protocol, PipeliningProtocol):
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        timeout = self.timeout
        try:
            replies = await protocol.exchange(envelope, 3, timeout)
            accepted = len(replies) == 3 and replies[2].code == _START_INPUT
            if accepted and (replies[0].code != _OK or replies[1].code not in _RCPT_OK):
                # DATA accepted for a failed envelope: end an empty message first.
                await protocol.exchange(b".\r\n", 1, timeout)
            _check(replies, sender, recipient)
            (done,) = await protocol.exchange(body, 1, timeout)
            if done.code != _OK:
                raise aiosmtplib.SMTPDataError(done.code, done.message)
            return done.message
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
            codes = _codes(exc)
            if _CLOSING in codes or any(not 200 <= code < 600 for code in codes):
                self.close()  # closing, or out of step: never reuse this connection
            else:
                try:  # a clean envelope for the next message; the refusal is what matters
                    await self.rset()
                except (aiosmtplib.SMTPException, OSError):
                    self.close()
            raise
