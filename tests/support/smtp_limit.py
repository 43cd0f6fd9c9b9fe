"""A front for an SMTP server that takes at most ``limit`` connections at once.

Past the limit it answers as Postfix does (``421 4.7.0 ... too many connections``) and hangs
up; the connections it takes are forwarded to the server behind it, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib

from .ports import HOST, free_port

TOO_MANY = b"421 4.7.0 mx.test.example Error: too many connections from 127.0.0.1\r\n"


class ConnectionLimit:
    def __init__(self, target_port: int, limit: int) -> None:
        self.target_port = target_port
        self.limit = limit
        self.port = free_port()
        self.open = 0
        self.turned_away = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ConnectionLimit:
        self._server = await asyncio.start_server(self._handle, HOST, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.limit:
            self.turned_away += 1
            writer.write(TOO_MANY)
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self.open += 1
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
