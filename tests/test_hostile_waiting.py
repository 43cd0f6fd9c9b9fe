"""Bounds on what one client can hold, in process: waiting readers (long-polls and event
streams) per token and per service, a reader that does not read, and the SMTP intake's
connection cap, idle timeout, DATA limit, shared buffer budget, recipient cap, command cap and
the turns a session leaves the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from typing import Any

from otp_service.http.app import SERVICES
from otp_service.http.waiting import WAITING
from otp_service.intake.smtp import (
    COMMANDS_WITHOUT_MESSAGE,
    MAX_ENCODED_WORDS,
    MAX_PARTS,
    too_complex,
)
from otp_service.store.inbox import InboxEvent, MemoryInbox, Readers

from .support.service import ClientFactory
from .support.signin import signin


async def wait_request(client: Any, token: str | None, n: int) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.get(
        "/v1/messages/latest",
        params={"to": f"nobody{n}@example.com", "wait": "30"},
        headers=headers,
    )


async def test_waiting_readers_capped_per_token_then_per_service(service: ClientFactory) -> None:
    """With 2 waiting requests allowed per token and 3 in all, a token's third gets 429 and
    another token's second 503, both too_many_waiting with Retry-After; a send is unaffected,
    and once the waiters are gone the token may wait again."""
    client = await service({
        "auth": {"tokens": ["token-a-0123456789", "token-b-0123456789"]},
        "capture": {"max_waiting": 3, "max_waiting_per_client": 2},
    })  # fmt: skip
    waiting = [asyncio.create_task(wait_request(client, "token-a-0123456789", n)) for n in (1, 2)]
    waiting.append(asyncio.create_task(wait_request(client, "token-b-0123456789", 3)))
    counts = client.server.app[WAITING]
    for _ in range(200):  # bounded: until the three are counted
        if counts.count == 3:
            break
        await asyncio.sleep(0.01)
    third = await wait_request(client, "token-a-0123456789", 4)
    assert third.status == 429 and "Retry-After" in third.headers
    assert (await third.json())["error"]["code"] == "too_many_waiting"
    other = await wait_request(client, "token-b-0123456789", 5)
    assert other.status == 503 and (await other.json())["error"]["code"] == "too_many_waiting"
    sent = await client.post(
        "/v1/email",
        json=signin("a@example.com"),
        headers={"Authorization": "Bearer token-a-0123456789"},
    )
    assert sent.status == 200
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    for _ in range(200):
        if counts.count == 0:
            break
        await asyncio.sleep(0.01)
    again = await client.get(
        "/v1/messages/latest",
        params={"to": "a@example.com", "wait": "1"},
        headers={"Authorization": "Bearer token-a-0123456789"},
    )
    assert again.status == 200


async def test_reader_that_falls_a_buffer_behind_is_ended() -> None:
    """A live reader that does not take its events is ended once they hold more than its
    byte budget (what it had queued is freed at once); a reader that keeps up is not."""
    readers = Readers(queue_size=1000, max_bytes=200_000)
    slow, fast = readers.stream(), readers.stream()
    assert (await anext(slow)).kind == "ready" and (await anext(fast)).kind == "ready"
    inbox = MemoryInbox()
    big = "x" * 50_000
    for n in range(10):
        await inbox.add(_message(n, big))
        message = await inbox.get(f"m{n}")
        readers.publish(InboxEvent("added", message=message))
        assert (await anext(fast)).kind == "added"
    kinds = [event.kind async for event in slow]
    assert kinds == [] and len(readers) == 1  # ended, its queue freed; the fast one stays


def _message(n: int, text: str) -> Any:
    from datetime import UTC, datetime

    from otp_service.message.compose import Message

    return Message(id=f"m{n}", channel="email", to="a@example.com", type="SignIn", locale="en",
                   text=text, created_at=datetime.now(UTC))  # fmt: skip


def test_mail_too_complex_to_parse_is_named() -> None:
    """The checks before parsing: header size, encoded words, addresses, MIME parts."""
    ok = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    assert too_complex(ok) is None
    words = b"Subject: " + b" ".join([b"=?UTF-8?B?w6k=?="] * (MAX_ENCODED_WORDS + 1))
    assert "encoded words" in (too_complex(words + b"\r\n\r\nx") or "")
    to = b"To: " + b", ".join(b"u%d@example.com" % n for n in range(300))
    assert "addresses" in (too_complex(to + b"\r\n\r\nx") or "")
    parts = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(MAX_PARTS * 2 + 2))
    assert "MIME parts" in (too_complex(b"Subject: x\r\n\r\n" + parts) or "")
    assert "exceed" in (too_complex(b"X: " + b"a" * 70_000 + b"\r\n\r\n") or "")


async def smtp_intake(service: ClientFactory, **smtp: Any) -> tuple[Any, int]:
    client = await service({"capture": {"smtp": {"host": "127.0.0.1", "port": 0, **smtp}}})
    intake = client.server.app[SERVICES].intake
    assert intake is not None
    return client, intake.port


async def start_data(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"220")
    for command in (b"EHLO a\r\n", b"MAIL FROM:<a@example.com>\r\n",
                    b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
        writer.write(command)
        while (answer := await asyncio.wait_for(reader.readline(), 10))[3:4] == b"-":
            pass
        assert answer[:1] in (b"2", b"3"), answer
    return reader, writer


async def test_smtp_data_past_the_limit_is_refused_as_it_streams(service: ClientFactory) -> None:
    """A DATA larger than capture.smtp.max_message_bytes is answered 552 before the client
    sends its end, and the connection is closed: nothing past the limit is read."""
    _, port = await smtp_intake(service, max_message_bytes=64 * 1024)
    reader, writer = await start_data(port)
    writer.write((b"x" * 998 + b"\r\n") * 80)  # 80 KB, and never the end of DATA
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 10)
    assert answer.startswith(b"552"), answer
    assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed
    writer.close()


async def test_smtp_buffer_budget_shared_by_every_client(service: ClientFactory) -> None:
    """Two clients whose unfinished DATA together pass capture.smtp.max_buffered_bytes: the
    one that crosses it is answered 452 and disconnected."""
    _, port = await smtp_intake(
        service, max_message_bytes=1024 * 1024, max_buffered_bytes=96 * 1024
    )
    line = b"y" * 998 + b"\r\n"
    first_reader, first = await start_data(port)
    first.write(line * 64)  # 64 KB held
    await first.drain()
    second_reader, second = await start_data(port)
    second.write(line * 64)
    with_error = False
    try:
        await second.drain()
    except ConnectionError:
        with_error = True
    answer = await asyncio.wait_for(second_reader.readline(), 10)
    assert answer.startswith(b"452") or with_error, answer
    first.write(b".\r\n")
    await first.drain()
    assert (await asyncio.wait_for(first_reader.readline(), 10))[:1] in (b"2", b"5")
    first.close()
    second.close()


async def test_smtp_connections_past_the_cap_get_421(service: ClientFactory) -> None:
    """Past capture.smtp.max_connections a client is answered 421 and closed; an idle client
    is disconnected after capture.smtp.idle_seconds, which makes room again."""
    _, port = await smtp_intake(service, max_connections=2, idle_seconds=0.5)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for reader, _ in held:
        assert (await reader.readline()).startswith(b"220")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"421")
    writer.close()
    for reader, held_writer in held:  # the idle ones are closed by the server
        assert await asyncio.wait_for(reader.read(), 10) == b""
        held_writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
    writer.close()


async def smtp_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A client past its EHLO; and how many answers it got so far: the greeting and the EHLO
    reply (one answer, however many lines)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
    writer.write(b"EHLO a\r\n")
    while (await asyncio.wait_for(reader.readline(), 10))[3:4] == b"-":
        pass
    return reader, writer, 2


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """Up to ``count`` answer lines, fewer if the server hangs up."""
    lines: list[bytes] = []
    while len(lines) < count and (line := await asyncio.wait_for(reader.readline(), 10)):
        lines.append(line)
    return lines


MAIL = b"From: a@example.com\r\nSubject: hi\r\n\r\nYour code is 482913\r\n.\r\n"


async def test_smtp_recipients_past_the_cap_get_452_and_the_session_goes_on(
    service: ClientFactory,
) -> None:
    """Past capture.smtp.max_recipients a RCPT is answered 452 4.5.3 (RFC 5321 4.5.3.1.10);
    the message goes to the recipients accepted, and the same session sends another."""
    client, port = await smtp_intake(service, max_recipients=3)
    reader, writer, _ = await smtp_session(port)
    writer.write(b"MAIL FROM:<a@example.com>\r\n"
                 + b"".join(b"RCPT TO:<u%d@example.com>\r\n" % n for n in range(5)))  # fmt: skip
    got = await read_answers(reader, 6)
    assert [line[:3] for line in got] == [b"250"] * 4 + [b"452"] * 2, got
    assert got[-1].startswith(b"452 4.5.3 Too many recipients"), got
    writer.write(b"DATA\r\n" + MAIL)
    assert [line[:3] for line in await read_answers(reader, 2)] == [b"354", b"250"]
    writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<u9@example.com>\r\nDATA\r\n" + MAIL)
    assert [line[:3] for line in await read_answers(reader, 4)] == [b"250"] * 2 + [b"354", b"250"]
    writer.close()
    listed = await (await client.get("/v1/messages", params={"limit": "100"})).json()
    assert sorted(m["to"] for m in listed["messages"]) == [
        "u0@example.com", "u1@example.com", "u2@example.com", "u9@example.com"
    ]  # fmt: skip


async def test_smtp_commands_without_a_message_end_with_421(service: ClientFactory) -> None:
    """A client gets COMMANDS_WITHOUT_MESSAGE answers, plus one per recipient it may have,
    between two captured messages: a NOOP flood is then answered 421 and closed, while a
    client that sends a message in between goes on."""
    _, port = await smtp_intake(service, max_recipients=10)
    limit = COMMANDS_WITHOUT_MESSAGE + 10
    reader, writer, answered = await smtp_session(port)
    writer.write(b"NOOP\r\n" * (limit + 100))
    got = await read_answers(reader, limit + 100)
    assert len(got) == limit - answered + 1, len(got)
    assert set(got[:-1]) == {b"250 OK\r\n"} and got[-1].startswith(b"421 4.7.0"), got[-3:]
    assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed
    writer.close()

    reader, writer, answered = await smtp_session(port)
    half = (limit - answered) * 2 // 3
    for _ in range(2):
        writer.write(b"NOOP\r\n" * half + b"MAIL FROM:<a@example.com>\r\n"
                     + b"RCPT TO:<b@example.com>\r\nDATA\r\n" + MAIL)  # fmt: skip
        got = await read_answers(reader, half + 4)
        assert [line[:3] for line in got[half:]] == [b"250", b"250", b"354", b"250"], got[-4:]
    writer.close()


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def test_smtp_pipelined_commands_leave_the_event_loop_its_turns(
    service: ClientFactory,
) -> None:
    """1,000 NOOPs arriving at once are not all answered in one turn of the event loop: a task
    that runs at every turn sees at most a few dozen answered between two of its runs (before,
    all of them: every other request waited for the whole burst). aiosmtpd logs each command
    line it reads (logger ``mail.log``, INFO): that count is what the task samples."""
    _, port = await smtp_intake(service)
    reader, writer, _ = await smtp_session(port)
    logger, counter = logging.getLogger("mail.log"), _Count()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(counter)
    seen: list[int] = []

    async def every_turn() -> None:
        while True:
            seen.append(counter.count)
            await asyncio.sleep(0)

    turns = asyncio.create_task(every_turn())
    try:
        writer.write(b"NOOP\r\n" * 1000)
        assert len(await read_answers(reader, 1000)) == 1000
    finally:
        turns.cancel()
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate
        writer.close()
    assert counter.count >= 1000
    most = max(later - earlier for earlier, later in itertools.pairwise(seen))
    assert most <= 50, most


async def test_smtp_client_that_never_reads_its_answers_loses_its_place(
    service: ClientFactory,
) -> None:
    """A client that sends commands (and messages, so the command cap does not end it) but
    never reads the answers: once they fill the socket, the session waits to write, and after
    capture.smtp.idle_seconds it is cut off (a plain close would wait for the client to read,
    holding its place among max_connections for as long as the client kept the socket)."""
    _, port = await smtp_intake(service, max_connections=1, idle_seconds=0.5)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sending: asyncio.Task[None] | None = None
    cycle = (b"HELP\r\n" * 1000 + b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
             + b"DATA\r\n" + MAIL)  # fmt: skip
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        sending = asyncio.create_task(loop.sock_sendall(sock, b"EHLO a\r\n" + cycle * 80))
        answer = b""
        for _ in range(60):  # until the one place is free again
            await asyncio.sleep(0.5)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError):
                answer = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            if answer.startswith(b"220"):
                break
        assert answer.startswith(b"220"), answer
    finally:
        if sending is not None:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        sock.close()
