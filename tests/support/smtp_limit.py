"""A front for an SMTP server that takes at most ``limit`` connections at once.

Past the limit it turns new connections away in one of three ways (``mode``):

- ``"421"``: it answers as Postfix does (``421 4.7.0 ... too many connections``) and hangs up;
- ``"reset"``: it accepts the TCP connection and resets it (RST) before any greeting, as a
  firewall or a server's connection limit in the kernel does;
- ``"refuse"``: it stops listening while ``limit`` connections are open, so a new one is
  refused by the kernel (``ECONNREFUSED``), and listens again as soon as one closes.

The connections it takes are forwarded to the server behind it, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

from .ports import HOST, free_port

TOO_MANY = b"421 4.7.0 mx.test.example Error: too many connections from 127.0.0.1\r\n"

Mode = Literal["421", "reset", "refuse"]


class ConnectionLimit:
    def __init__(self, target_port: int, limit: int, mode: Mode = "421") -> None:
        self.target_port = target_port
        self.limit = limit
        self.mode = mode
        self.port = free_port()
        self.open = 0
        self.turned_away = 0  # 421 answered, or reset
        self.not_listening = 0  # times the listener closed at the limit ("refuse")
        self._server: asyncio.Server | None = None
        self._listening = False  # or about to: set before start_server() returns
        self._closed: list[asyncio.Server] = []
        self._exiting = False

    async def __aenter__(self) -> ConnectionLimit:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._exiting = True
        if self._server is not None:
            self._server.close()
            self._closed.append(self._server)
            self._server = None
        for server in self._closed:
            await server.wait_closed()

    async def _listen(self) -> None:
        self._listening = True
        server = await asyncio.start_server(self._handle, HOST, self.port)
        if self._exiting:  # the test ended while it started
            server.close()
            self._closed.append(server)
        else:
            self._server = server

    def _stop_listening(self) -> None:
        """At the limit in "refuse" mode: the kernel refuses new connections from now on."""
        if self._server is not None:
            self._server.close()
            self._closed.append(self._server)
            self._server, self._listening = None, False
            self.not_listening += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.limit:  # "refuse": one that was in the backlog as it closed
            self.turned_away += 1
            if self.mode == "421":
                writer.write(TOO_MANY)
                with contextlib.suppress(OSError):
                    await writer.drain()
            else:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return
        self.open += 1
        if self.mode == "refuse" and self.open >= self.limit:
            self._stop_listening()
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.open -= 1
            if self.mode == "refuse" and not self._listening and not self._exiting:
                await self._listen()
