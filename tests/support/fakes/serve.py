"""Run one SMS provider fake as its own process, for a service subprocess or a benchmark.

    python -m tests.support.fakes.serve vonage|aliyun|twilio --port-file F [--port N]

Starts :class:`~tests.support.fakes.vonage.FakeVonage`, :class:`~tests.support.fakes.aliyun.FakeAliyun` or
:class:`~tests.support.fakes.twilio.FakeTwilio` on
``127.0.0.1``, then writes one JSON object to ``F`` (atomically: a reader sees the whole file
or none)::

    {"provider": "vonage", "pid": 123, "host": "127.0.0.1:PORT", "url": "https://...",
     "endpoint": {...}, "ca_file": "/tmp/.../ca.pem"}

``endpoint`` is the ``sms.endpoints.<provider>`` config that points otp-service at the fake;
``ca_file`` (Vonage and Twilio, else null) is the PEM of its test CA, to trust it from a bare SDK
(``REQUESTS_CA_BUNDLE``). It stays up until SIGTERM or SIGINT, then prints one JSON line with
what it received (``{"requests": N, "sms": N}``) and exits 0. Run it from the repository root
(``tests`` is a package there); it needs the ``test`` extra (aiohttp, trustme, pytest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .aliyun import FakeAliyun
from .twilio import FakeTwilio
from .vonage import FakeVonage

FAKES: dict[str, type[FakeVonage] | type[FakeAliyun] | type[FakeTwilio]] = {
    "vonage": FakeVonage,
    "aliyun": FakeAliyun,
    "twilio": FakeTwilio,
}


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fakes.serve",
        description="Run one SMS provider fake on 127.0.0.1.",
    )
    parser.add_argument("provider", choices=sorted(FAKES))
    parser.add_argument(
        "--port-file", required=True, type=Path, help="where to write the endpoint JSON"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    fake = FAKES[args.provider](port=args.port)
    fake.start()
    ca_file = fake.ca_file if isinstance(fake, FakeVonage | FakeTwilio) else None
    try:
        _write_atomically(
            args.port_file,
            {
                "provider": args.provider,
                "pid": os.getpid(),
                "host": fake.host,
                "url": fake.url,
                "endpoint": fake.endpoint(),
                "ca_file": ca_file,
            },
        )
        while not stop.wait(0.5):
            pass
    finally:
        received, sms = len(fake.requests), len(fake.sms)
        fake.stop()
        if ca_file is not None:
            shutil.rmtree(Path(ca_file).parent, ignore_errors=True)
    print(json.dumps({"requests": received, "sms": sms}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
