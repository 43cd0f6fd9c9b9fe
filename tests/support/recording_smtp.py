"""A recording SMTP sink as its own process, for tests that run the service as a process too.

    python -m tests.support.recording_smtp --port-file F --out F.jsonl [--delay S] [--delay-file D]

Listens on a free port of ``127.0.0.1`` (real SMTP: aiosmtpd), writes ``{"port": N, "pid": N}``
to ``F`` atomically once it listens, and appends one JSON line to ``F.jsonl`` per event,
flushed at once so another process can read it while the sink runs::

    {"event": "data", "message_id": "<id@domain>", "rcpt_tos": [...], "at": 1700000000.1}
    {"event": "accepted", "message_id": "<id@domain>", "rcpt_tos": [...], "at": 1700000000.2}

``data`` is written when the message's DATA has arrived, ``accepted`` after the delay, just
before the ``250`` reply: a message counts as received only then. A client that goes away
during the delay cancels the session (aiosmtpd does), so nothing is recorded as accepted: the
message was never delivered, as with a real server. The delay is ``--delay`` seconds, or the
number written in ``--delay-file`` when that file exists (read at every DATA, so a test can
slow the server down or speed it up while it runs). SIGTERM or SIGINT stops it (exit 0).
Run it from the repository root (``tests`` is a package there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP

HOST = "127.0.0.1"
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.I | re.M)


class Sink:
    """The aiosmtpd handler: records every message, answers ``250`` after the delay."""

    def __init__(self, out: TextIO, delay: float, delay_file: Path | None) -> None:
        self.out = out
        self.delay = delay
        self.delay_file = delay_file

    def current_delay(self) -> float:
        if self.delay_file is not None:
            try:
                return float(self.delay_file.read_text(encoding="utf-8").strip() or 0)
            except (OSError, ValueError):
                pass
        return self.delay

    def record(self, event: str, envelope: Any) -> None:
        header = envelope.original_content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(header)
        line = {
            "event": event,
            "message_id": found.group(1).decode("ascii", "replace") if found else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "at": time.time(),
        }
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.record("data", envelope)
        delay = self.current_delay()
        if delay > 0:
            await asyncio.sleep(delay)  # cancelled if the client disconnects meanwhile
        self.record("accepted", envelope)
        return "250 OK"


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with args.out.open("a", encoding="utf-8") as out:
        sink = Sink(out, args.delay, args.delay_file)
        server = await loop.create_server(
            lambda: SMTP(sink, hostname="sink.test.example", enable_SMTPUTF8=True, timeout=30),
            HOST,
            args.port,
        )
        port = server.sockets[0].getsockname()[1]
        _write_atomically(args.port_file, {"port": port, "pid": os.getpid()})
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.recording_smtp", description=__doc__
    )
    parser.add_argument("--port-file", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="the JSON-lines record")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each 250")
    parser.add_argument("--delay-file", type=Path, help="a file holding the delay, if present")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
