"""HTTP fakes of the SMS providers, speaking their documented wire formats.

Each fake is a real aiohttp server on ``127.0.0.1`` running in its own thread with its own event
loop, so the real SDKs (Vonage's synchronous ``requests`` client, Aliyun's async one) talk to it
over real sockets, from an async test, a plain test or a separate benchmark script alike::

    with FakeVonage() as vonage:              # or vonage.start() ... vonage.stop()
        vonage.reply_next(vonage_status("9", "Quota Exceeded - rejected"))
        ...                                   # point sms.endpoints.vonage at vonage.endpoint()
        [request] = vonage.requests           # what the provider saw: form, query, headers

A fake records every request before it answers (also the ones it then drops), answers scripted
replies first (:meth:`FakeServer.reply_next`) and the provider's success answer otherwise.
:data:`DROP` reads the request and closes the connection without a response; a :class:`Reply`
with ``delay`` answers late (and is cancelled if the client gives up first).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from aiohttp import web

from ..ports import HOST


@dataclass(frozen=True)
class Recorded:
    """One HTTP request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]  # the decoded form body (empty for other bodies)
    headers: dict[str, str]  # names as sent; a repeated header keeps its last value
    body: bytes
    at: float = field(default_factory=time.time)  # when it arrived (unix time)
    peer: tuple[str, int] | None = None  # the client's address: one per connection

    def header(self, name: str) -> str | None:
        """A header value, whatever the case of its name."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


@dataclass(frozen=True)
class Reply:
    """A scripted HTTP answer: a JSON or text body, a status, headers, an optional delay."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    drop: bool = False  # read the request, then close the connection without answering


DROP = Reply(drop=True)
Script = Reply | Callable[[Recorded], Reply]
_Fake = TypeVar("_Fake", bound="FakeServer")


class FakeServer:
    """A recording, scriptable aiohttp server on ``127.0.0.1`` in a background thread.

    Subclasses set the routes (:meth:`routes`) and the default answer (:meth:`default_reply`).
    """

    scheme = "http"

    def __init__(self, *, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.ssl_context = ssl_context
        self.lock = threading.Lock()
        self._requests: list[Recorded] = []
        self._script: collections.deque[Script] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.BaseTransport] = set()  # touched on the server's loop only

    # what a subclass provides

    def routes(self) -> list[web.RouteDef]:
        """The provider's endpoints; by default every path and method is answered."""
        return [web.route("*", "/{tail:.*}", self.handle)]

    def default_reply(self, request: Recorded) -> Reply:
        """The answer when nothing is scripted."""
        return Reply(json={})

    # scripting and inspection (thread-safe)

    def reply_next(self, *replies: Script) -> None:
        """Answer the next requests with ``replies``, in order, then the default again.

        A reply may be a function of the recorded request (e.g. to echo a field back).
        """
        with self.lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far, oldest first."""
        with self.lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget the recorded requests and any scripted replies left."""
        with self.lock:
            self._requests.clear()
            self._script.clear()

    @property
    def host(self) -> str:
        """``127.0.0.1:port``, as the SDKs want their endpoint host."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    # the server side

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            self._transports.add(request.transport)
        body = await request.read()
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            form=form,
            headers=dict(request.headers),
            body=body,
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        with self.lock:
            self._requests.append(recorded)
            script = self._script.popleft() if self._script else None
        reply = self.default_reply(recorded) if script is None else script
        if callable(reply):
            reply = reply(recorded)
        if reply.drop:
            # The request was read in full; the client gets no status line at all.
            assert request.transport is not None
            request.transport.close()
            # handler_cancellation: closing the connection cancels this handler.
            await asyncio.get_running_loop().create_future()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.text is not None:
            return web.Response(
                status=reply.status, text=reply.text, headers=dict(reply.headers),
                content_type="text/plain",
            )  # fmt: skip
        return web.json_response(reply.json, status=reply.status, headers=dict(reply.headers))

    async def _start(self) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        # handler_cancellation: a handler sleeping in a late reply stops when the client leaves.
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True,
            shutdown_timeout=0.5,
        )  # fmt: skip
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        self.port = cast(tuple[str, int], runner.addresses[0])[1]

    async def _stop(self, runner: web.AppRunner) -> None:
        # A TLS connection closed politely waits for the client's close_notify, which a pooled
        # client connection never sends: abort instead, so no socket outlives the loop.
        for transport in self._transports:
            cast(asyncio.Transport, transport).abort()
        self._transports.clear()
        await runner.cleanup()

    def start(self: _Fake) -> _Fake:
        """Listen (on a free port unless one was given); returns the server."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name=f"{type(self).__name__}", daemon=True)
        thread.start()
        started.wait(10)
        if failure:
            thread.join(5)
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close every connection and stop listening; :meth:`start` listens again."""
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(self._stop(runner), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self: _Fake) -> _Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def started(factory: Callable[[], _Fake]) -> Iterator[_Fake]:
    """Start a fake for the duration of a ``with`` block (and of a pytest fixture)."""
    server = factory().start()
    try:
        yield server
    finally:
        server.stop()
