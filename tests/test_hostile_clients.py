"""Hostile clients against the real service process (tests/support/hostile.py): each attack
runs while a separate probe process sends normal emails and checks ``/healthz``. Memory is read
from ``/proc`` (peak ``VmHWM``, ``VmRSS`` after); the bounds have a wide margin over the
figures in docs/hostile-input.md. Statuses are asserted, never timing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .support import ROOT
from .support.hostile import Figures, Target, run

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def descriptors() -> Iterator[None]:
    """This process opens thousands of client connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 16384), max(hard, 16384)))
    yield
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def scenario(name: str, folder: Path) -> Figures:
    figures = await run(name, folder, ROOT)
    print(figures.line())  # the figures, for the docs (pytest -s)
    return figures


def unharmed(figures: Figures) -> None:
    """Every probe send was accepted and every health check answered 200."""
    assert figures.send_statuses and set(figures.send_statuses) == {200}, figures
    assert figures.health_statuses and set(figures.health_statuses) == {200}, figures


def grew_mib(figures: Figures) -> float:
    return figures.peak_mib - figures.extra["rss_before_mib"]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("encoded_words", "its headers exceed"),
        ("mime_parts", "more than 100 MIME parts"),
        ("addresses", "its headers exceed"),
    ],
)
async def test_hostile_mail_is_refused_before_parsing(
    name: str, refusal: str, tmp_path: Path
) -> None:
    """A 480 KB mail of 24,000 encoded words, one of 20,000 MIME parts, one of 20,000
    addresses: refused with 554 before the parser sees them; memory barely moves and the
    concurrent sends are answered 200 (they were 5.6 GB / 16 s, 8.8 s and 10 s)."""
    figures = await scenario(name, tmp_path)
    assert figures.extra["answer"].startswith("554 5.6.0") and refusal in figures.extra["answer"]
    assert grew_mib(figures) < 40, figures
    unharmed(figures)


async def test_smtp_clients_that_never_finish_data_are_bounded(tmp_path: Path) -> None:
    """40 SMTP clients each send 9 MiB of DATA and hang up without the end: past the shared
    buffer budget (32 MiB) they are refused with 452 as they stream, and after they hang up
    the memory is handed back (it used to grow by 400 MiB and stay)."""
    figures = await scenario("data_hang", tmp_path)
    assert "354" not in figures.extra["answers"] or figures.extra["answers"]["354"] < 40
    assert grew_mib(figures) < 150, figures
    assert figures.rss_after_mib - figures.extra["rss_before_mib"] < 60, figures
    unharmed(figures)


async def test_smtp_recipient_flood_is_capped_and_leaves_sends_answering(tmp_path: Path) -> None:
    """100,000 pipelined RCPT TO in one transaction: the first 100 (capture.smtp.max_recipients)
    are accepted, the next ones answered 452 4.5.3 until the client has had 1,100 answers
    without a message, then 421 and closed; another client's 1,000 RCPT TO and DATA capture 100
    messages. No probe send waits 3 s (before: one DATA captured 100,000 messages, 125 MiB
    peak, sends waited 6.7-30 s)."""
    figures = await scenario("rcpt_flood", tmp_path)
    flood = figures.extra["flood_answers"]
    assert flood.get("250") == 100 and flood.get("452", 0) > 900, flood
    assert flood.get("421") == 1 and "flood_data" not in figures.extra, figures
    assert figures.extra["rcpt_answers"] == {"250": 100, "452": 900}, figures
    assert figures.extra["data"].startswith("250"), figures
    assert figures.extra["captured"] == [100], figures
    assert grew_mib(figures) < 40, figures
    assert figures.worst_send_seconds < 3.0, figures  # a bound, not a speed: it was 6.7-30 s
    unharmed(figures)


async def test_smtp_command_flood_is_cut_and_leaves_sends_answering(tmp_path: Path) -> None:
    """100,000 pipelined NOOPs, the client connecting again each time it is hung up on: each
    connection gets 421 after 1,100 answers without a message, a normal mail is captured
    afterwards, and no probe send waits 3 s (before: one connection took all 100,000 and a send
    waited 6.4-18 s, the event loop busy with the burst)."""
    figures = await scenario("command_flood", tmp_path)
    answers, connections = figures.extra["answers"], figures.extra["connections"]
    assert set(answers) <= {"250", "421", "closed"}, answers
    assert connections > 50 and answers.get("421") == connections - 1, figures
    assert figures.extra["mail"].startswith("250"), figures
    assert grew_mib(figures) < 40, figures
    assert figures.worst_send_seconds < 3.0, figures  # a bound, not a speed: it was 6.4-18 s
    unharmed(figures)


async def test_idle_smtp_connections_leave_sends_answering(tmp_path: Path) -> None:
    """1,100 idle SMTP connections against a process limited to 1,024 descriptors: the intake
    takes 64 and refuses the rest with 421; sends and /healthz keep answering 200."""
    figures = await scenario("smtp_idle", tmp_path)
    unharmed(figures)


async def test_two_thousand_long_polls_leave_sends_answering(tmp_path: Path) -> None:
    """2,000 ``latest?wait=`` at once from one client: 16 at a time wait (404 when their wait
    is over), the others get 429 too_many_waiting at once (or, past server.max_connections,
    the 503 refusal); sends and /healthz keep answering 200."""
    figures = await scenario("long_polls", tmp_path)
    polls = {int(k): v for k, v in figures.extra["poll_statuses"].items()}
    assert polls.get(429, 0) > 4 * polls.get(404, 0), polls  # 16 at a time may wait
    assert set(polls) <= {0, 404, 429, 503}, polls
    unharmed(figures)


async def test_event_stream_readers_that_never_read_are_bounded(tmp_path: Path) -> None:
    """150 event-stream readers that never read while 200 messages of 60 KB are captured (the
    per-client cap lifted, so all 150 are admitted): each is dropped once its buffer is full,
    and memory stays bounded."""
    figures = await scenario("streams_per_client_cap_off", tmp_path)
    assert set(figures.extra["big_send_statuses"]) == {200}
    assert grew_mib(figures) < 200, figures
    unharmed(figures)


async def test_slow_and_idle_keepalive_connections_leave_sends_answering(tmp_path: Path) -> None:
    """1,500 clients trickling their headers plus 3,000 idle keep-alive connections, under a
    1,024-descriptor limit: idle and slow connections yield to new ones; every send and health
    check that reaches the service is answered 200, and most of the probe's connections get
    through (none did for 80 s)."""
    figures = await scenario("connections", tmp_path)
    assert figures.extra["opened"] > 2000
    # Measured: some probe connections (3 of 32, 4 of 37, 9 of 25 in three runs) are reset at
    # connect while slow clients that reconnect as fast as they are dropped churn the cap; every
    # request that reached the service was answered 200. A known gap, not the "every send" the
    # other scenarios hold to (docs/hostile-input.md): held here to "most get through".
    sends, health = figures.send_statuses, figures.health_statuses
    assert set(sends) <= {200, 0} and set(health) <= {200, 0}, figures
    assert sends.get(200, 0) > sends.get(0, 0) and sends.get(200, 0) >= 10, figures
    assert health.get(200, 0) > health.get(0, 0), figures


async def test_hostile_logto_templates_leave_every_send_answering(tmp_path: Path) -> None:
    """Logto's templates change under the running service to a 440 KB template of 40,000
    placeholders (fr), a loop bomb (ja) and a subject rendering CR/LF (zh-CN): sends in those
    languages are answered 200 from the next source (Logto's en template), never from the
    hostile one; the probe's sends (en) and /healthz keep answering 200 and memory stays
    bounded (before: the 440 KB template held every send for 12-19 s and took 590 MiB, the
    bomb 1.5-2.7 s and 220-260 MiB per send in its language, the CR/LF subject 400)."""
    figures = await scenario("logto_templates", tmp_path)
    assert figures.extra["hostile_send_statuses"] == {200: 15}, figures
    rendered = figures.extra["rendered_from"]
    assert set(rendered) == {"fr", "ja", "zh-CN"}, figures
    for language, sources in rendered.items():
        assert sum(sources.values()) == 5 and f"logto/{language}" not in sources, figures
    # Generous bounds (a stall was 14-18 s, the probe gives up at 30 s): not a timing test.
    assert figures.extra["worst_hostile_send_seconds"] < 10, figures
    assert figures.worst_send_seconds < 10, figures
    assert figures.extra["logto_state"] == "template_error", figures  # the 440 KB one is named
    assert grew_mib(figures) < 60, figures
    unharmed(figures)


async def test_refusal_past_max_connections_is_readable_after_a_request(tmp_path: Path) -> None:
    """With every connection busy, a client that sends a whole request (head and body) before
    reading still reads the 503 too_many_connections: it is not reset."""
    target = Target(
        tmp_path, config={"server": {"max_connections": 8, "header_timeout_seconds": 3}}
    )
    try:
        await target.ready()
        busy = []
        for _ in range(8):
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.write(b"POST /v1/email HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            await writer.drain()
            busy.append(writer)
        await asyncio.sleep(0.3)
        answers = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            body = json.dumps({"to": "a@example.com", "type": "SignIn", "payload": {"code": "1"}})
            writer.write(
                b"POST /v1/email HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
                + b"x" * 65536  # more than the server reads: the close must not reset
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            try:
                answers.append(await asyncio.wait_for(reader.read(65536), 10))
            except ConnectionError:
                answers.append(b"reset")
            writer.close()
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers
        assert all(b"too_many_connections" in a for a in answers)
        for writer in busy:
            writer.close()
    finally:
        target.stop()


async def test_clients_past_the_cap_that_write_a_large_request_first_read_the_503(
    tmp_path: Path,
) -> None:
    """64 requests whose body never ends hold server.max_connections (64); 50 clients at once
    each write a whole 1 MB request before reading: they read the 503 too_many_connections
    (before, 36-50 of 50 got a broken pipe: the refusal was closed with their request unread)."""
    figures = await scenario("past_cap_raw_1m_50", tmp_path)
    answers = figures.extra["answers"]
    assert set(answers) <= {"503", "BrokenPipeError", "reset"}, figures
    # All 50 in every run measured; a client still writing after the 1 s linger (a very busy
    # machine) would get the old broken pipe: held to "nearly all", which 0-14 of 50 was not.
    assert answers.get("503", 0) >= 45, figures
    assert grew_mib(figures) < 40, figures


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs (needs root), unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace')}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def send(http: aiohttp.ClientSession, target: Target, n: int) -> int:
    body = {"to": f"u{n}@example.com", "type": "SignIn",
            "payload": {"code": f"{n:06d}", "application": {"name": "x" * 20_000}}}  # fmt: skip
    async with http.post(f"{target.url}/v1/email", json=body) as response:
        await response.read()
        return response.status


async def test_full_disk_then_room_again_the_next_send_succeeds(
    small_disk: Path, tmp_path: Path
) -> None:
    """The store's filesystem fills up (a real tmpfs, filled by another file): sends get 503
    store_unavailable; once the filler is removed, the very next send is accepted, without
    waiting for the service to notice by itself."""
    target = Target(tmp_path / "service",
                    config={"store": {"path": str(small_disk / "outbox.sqlite3")}})  # fmt: skip
    try:
        await target.ready()
        async with aiohttp.ClientSession() as http:
            assert await send(http, target, 0) == 200
            filler = small_disk / "filler"
            # Outermost: the close may flush what a full disk refused, and raise there too.
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as file:
                for _ in range(6 * 16):
                    file.write(b"\0" * 65536)
                    file.flush()
            statuses = [await send(http, target, n) for n in range(1, 40)]
            assert 503 in statuses and set(statuses) <= {200, 503}, statuses
            filler.unlink()
            assert await send(http, target, 99) == 200
    finally:
        target.stop()
