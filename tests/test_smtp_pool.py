"""The SMTP connection pool following demand, against real aiosmtpd servers.

Connections open as messages wait, up to the ceiling; idle ones close except those kept warm
(with NOOP, a bounded number of times); a server that turns connections away lowers the
ceiling and the messages wait for the connections it does take.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .support.mailer import TEMPLATES, Mailer
from .support.smtp_limit import ConnectionLimit, Mode
from .support.smtp_server import RecordingSMTPServer, ServerFactory


def mailer_for(port: int, **pool: Any) -> Mailer:
    """A :class:`Mailer` for the server on ``port`` with these pool settings."""
    connector = {
        "host": "127.0.0.1", "port": port, "fromEmail": "no-reply@acme.example",
        "name": "otp.test.example", "templates": TEMPLATES, "socketTimeout": 5000,
    }  # fmt: skip
    return Mailer(connector, pool)


@pytest.fixture
async def mailers(smtp_servers: ServerFactory) -> AsyncIterator[Callable[..., Mailer]]:
    made: list[Mailer] = []

    def make(port: int, **pool: Any) -> Mailer:
        made.append(mailer_for(port, **pool))
        return made[-1]

    yield make
    for mailer in made:
        await mailer.provider.close()
    await wait_until(smtp_servers.idle)


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for a state another thread or task changes (bounded)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_pool_default_ceiling_gives_twenty_concurrent_messages_their_own_connection(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer]
) -> None:
    """With the default pool, 20 messages sent at once never wait for each other's connection."""
    server = smtp_servers(pipelining=True)
    mailer = mailers(server.port)

    await asyncio.gather(*(mailer.send(f"user{i}@example.com") for i in range(20)))

    assert mailer.pool.ceiling == 20
    assert len(server.messages) == 20 and server.peak_open <= 20


async def test_pool_closes_idle_connections_but_keeps_one_warm(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer]
) -> None:
    """After a burst, idle connections close except keep_warm, which the next message reuses."""
    server = smtp_servers(pipelining=True)
    mailer = mailers(server.port, size=4, max_idle_seconds=0.1, keep_warm=1)
    await asyncio.gather(*(mailer.send(f"user{i}@example.com") for i in range(4)))
    opened = mailer.pool.opened

    await wait_until(lambda: sum(c.closed for c in server.connections) == opened - 1)
    await mailer.send("later@example.com")

    assert mailer.pool.opened == opened and mailer.pool.open_connections == 1
    assert len(server.messages) == 5


@pytest.mark.slow
async def test_pool_keeps_warm_connection_with_noop_and_replaces_it_after_max_noops(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer]
) -> None:
    """A warm connection sends NOOP every keepalive_seconds; after max_noops it is replaced."""
    server = smtp_servers(pipelining=True)
    mailer = mailers(server.port, keepalive_seconds=1, max_noops=1, keep_warm=1)
    await mailer.send("first@example.com")

    await wait_until(
        lambda: (
            mailer.pool.opened == 2
            and mailer.pool.idle_connections == 1
            and server.connections[0].closed
        )
    )
    await mailer.send("second@example.com")

    assert server.connections[0].commands.count("NOOP") == 1
    assert [m.connection for m in server.messages] == [1, 2]
    assert mailer.pool.open_connections == 1


async def test_pool_lowers_ceiling_when_server_turns_connections_away(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer]
) -> None:
    """A 421 "too many connections" caps the pool at what the server took; every message
    still goes out, over those connections."""
    server: RecordingSMTPServer = smtp_servers(pipelining=True)
    async with ConnectionLimit(server.port, limit=2) as front:
        mailer = mailers(front.port, size=6)

        await asyncio.gather(*(mailer.send(f"user{i}@example.com") for i in range(8)))

        assert front.turned_away >= 1 and mailer.pool.limited >= 1
        assert mailer.pool.ceiling <= 2 and server.peak_open <= 2
        assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
            f"user{i}@example.com" for i in range(8)
        )
        await mailer.provider.close()


@pytest.mark.parametrize("mode", ["reset", "refuse"])
async def test_pool_lowers_ceiling_when_server_resets_or_refuses_new_connections(
    smtp_servers: ServerFactory, mailers: Callable[..., Mailer], mode: Mode
) -> None:
    """A server that resets new TCP connections past two (or stops listening, so the kernel
    refuses them) while two are open: the pool caps itself at the two it has, and every
    message goes out over them, each once."""
    server: RecordingSMTPServer = smtp_servers(pipelining=True)
    async with ConnectionLimit(server.port, limit=2, mode=mode) as front:
        mailer = mailers(front.port, size=6)
        recipients = [f"user{i}@example.com" for i in range(12)]

        await asyncio.gather(*(mailer.send(to) for to in recipients))

        if mode == "refuse":
            assert front.not_listening >= 1
        else:
            assert front.turned_away >= 1
        assert mailer.pool.limited >= 1
        assert mailer.pool.ceiling <= 2 and server.peak_open <= 2
        assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(recipients)
        await mailer.provider.close()
