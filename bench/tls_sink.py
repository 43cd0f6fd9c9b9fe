"""An SMTP sink as real relays are set up: ``python -m bench.tls_sink``.

aiosmtpd on 127.0.0.1 with STARTTLS required (a ``trustme`` test CA; its PEM is written next
to the port file), AUTH LOGIN/PLAIN required after it (user ``bench``, password
``bench-password``), ``PIPELINING`` advertised (aiosmtpd reads commands line by line, so
pipelined commands work; ``--no-pipelining`` leaves it out); every message is counted and
discarded. Postfix's ``smtp-sink`` does neither STARTTLS nor AUTH, so it cannot stand in here.

It writes ``{"port", "pid", "ca_file"}`` to ``--port-file`` once listening, and on SIGTERM
prints ``{"messages": N, "connections": N, "resumed": N}`` (resumed: connections whose TLS
handshake resumed an earlier session).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

USER, PASSWORD = "bench", "bench-password"


class _Sink:
    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.messages = 0
        self.connections = 0
        self.resumed = 0  # connections whose TLS handshake resumed an earlier session

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        if tls is not None and tls.session_reused and not getattr(session, "counted", False):
            session.counted = True  # the first EHLO after STARTTLS: the handshake is over
            self.resumed += 1
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.messages += 1
        return f"250 2.0.0 Ok: queued as B{self.messages}"


def _authenticate(
    server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=USER if ok else None)


async def serve(args: argparse.Namespace) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = Path(args.port_file).with_suffix(".ca.pem")
    ca_file.write_bytes(ca.cert_pem.bytes())
    sink = _Sink(not args.no_pipelining)

    def factory() -> SMTP:
        sink.connections += 1
        return SMTP(
            sink, hostname="sink.bench.example", tls_context=context, require_starttls=True,
            authenticator=_authenticate, auth_required=True, auth_require_tls=True,
            enable_SMTPUTF8=True, timeout=300,
        )  # fmt: skip

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    info = {"port": port, "pid": os.getpid(), "ca_file": str(ca_file)}
    Path(args.port_file).write_text(json.dumps(info))  # noqa: ASYNC240 (once, before serving)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    counts = {"messages": sink.messages, "connections": sink.connections, "resumed": sink.resumed}
    print(json.dumps(counts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--no-pipelining", action="store_true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
