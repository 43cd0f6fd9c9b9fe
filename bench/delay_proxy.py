"""A TCP proxy that adds network distance: ``python -m bench.delay_proxy``.

The kernel here has no ``netem`` queueing discipline (``tc qdisc add ... netem`` answers
"Specified qdisc kind is unknown"), so the delay scenario puts this proxy between the clients
and the SMTP sink instead: every chunk of bytes is held for half the round-trip time in each
direction, in order, and the sink's first bytes (its greeting) are held until two round trips
after the connection was accepted, what TCP's handshake plus the greeting cost over a real link
(SYN, SYN-ACK, ACK, then the banner). Bandwidth and loss are not modelled. Only the SMTP
traffic goes through it; the HTTP between the load generator and the service stays direct.

It counts round trips as they happen: one per connection (TCP's handshake), and one each time
a client speaks after the server did (load on the machine changes how long they take, not how
many there are). It writes
``{"port", "pid"}`` to ``--port-file`` once listening; on SIGUSR1 it writes its counters
(``{"connections", "round_trips"}``) next to it (``*.counts.json``), on SIGTERM it prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
from pathlib import Path


class _Half:
    """One direction: bytes from one side written to the other ``delay`` seconds later."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, not_before: float) -> None:
        self.loop, self.delay, self.not_before = loop, delay, not_before
        self.dst: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.peer: _Half | None = None  # the other direction
        self.ended = False

    def feed(self, data: bytes | None) -> None:
        """Queue ``data`` (None: the end of the stream) for ``delay`` seconds from now."""
        if self.ended or (self.queue and self.queue[-1][1] is None):
            return
        due = max(self.loop.time() + self.delay, self.not_before)
        self.queue.append((due, data))
        if self.timer is None and self.dst is not None:
            self.timer = self.loop.call_at(due, self.flush)

    def attach(self, dst: asyncio.Transport) -> None:
        self.dst = dst
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        dst = self.dst
        while self.queue and self.queue[0][0] <= now + 0.0002:
            _, data = self.queue.popleft()
            if dst is None or dst.is_closing():
                self.queue.clear()
                return
            if data is None:  # the source finished: pass its EOF on; both done, close both
                self.queue.clear()
                self.ended = True
                if self.peer is not None and self.peer.ended:
                    dst.close()
                    if self.peer.dst is not None:
                        self.peer.dst.close()
                elif dst.can_write_eof():
                    dst.write_eof()
                else:
                    dst.close()
                return
            dst.write(data)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)


class _Turns:
    """Counts a connection's round trips: each time the client speaks after the server did
    (its first bytes included) is one more; bytes in a row from one side are one turn."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.client_last = False

    def heard(self, from_client: bool) -> None:
        if from_client and not self.client_last:
            self.proxy.round_trips += 1
        self.client_last = from_client


class _Side(asyncio.Protocol):
    def __init__(self, outgoing: _Half, turns: _Turns, client: bool) -> None:
        self.outgoing = outgoing  # what this side receives goes out through it
        self.turns, self.client = turns, client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.turns.heard(self.client)
        self.outgoing.feed(data)

    def eof_received(self) -> bool:
        self.outgoing.feed(None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.outgoing.feed(None)


class DelayProxy:
    def __init__(self, target: tuple[str, int], rtt: float) -> None:
        self.target, self.rtt = target, rtt
        self.connections = 0
        self.round_trips = 0  # TCP handshakes plus client turns, all connections (see _Turns)
        self.tasks: set[asyncio.Task[None]] = set()

    def client(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        self.connections += 1
        self.round_trips += 1  # the TCP handshake (the kernel's, which the greeting delay models)
        half = self.rtt / 2
        to_server = _Half(loop, half, 0.0)
        to_client = _Half(loop, half, loop.time() + 2 * self.rtt)
        to_server.peer, to_client.peer = to_client, to_server
        turns = _Turns(self)
        side = _Side(to_server, turns, client=True)

        async def connect() -> None:
            try:
                transport, _ = await loop.create_connection(
                    lambda: _Side(to_client, turns, client=False), *self.target
                )
            except OSError:
                if side.transport is not None:
                    side.transport.close()
                return
            to_server.attach(transport)  # type: ignore[arg-type]

        original = side.connection_made

        def made(transport: asyncio.BaseTransport) -> None:
            original(transport)
            to_client.attach(transport)  # type: ignore[arg-type]
            task = loop.create_task(connect())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        side.connection_made = made  # type: ignore[method-assign]
        return side


async def serve(args: argparse.Namespace) -> None:
    proxy = DelayProxy(("127.0.0.1", args.target_port), args.rtt_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(proxy.client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    info = json.dumps({"port": port, "pid": os.getpid()})
    Path(args.port_file).write_text(info)  # noqa: ASYNC240 (once, before serving)
    counts = Path(args.port_file).with_suffix(".counts.json")

    def write_counts() -> None:  # SIGUSR1: the counters so far, for a run's before and after
        data = {"connections": proxy.connections, "round_trips": proxy.round_trips}
        counts.write_text(json.dumps(data))

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, write_counts)
    await stop.wait()
    server.close()
    data = {"connections": proxy.connections, "round_trips": proxy.round_trips}
    print(json.dumps(data), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--port-file", required=True)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
