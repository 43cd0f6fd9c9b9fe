"""What the tests share and are not tests themselves: harnesses, fakes, request builders.

Test modules import from here (``from .support.processes import Processes``); no test module
imports another test module, and ``conftest.py`` holds only fixtures (``test_suite_layout``
checks both).

- :mod:`.ports`: a free local TCP port.
- :mod:`.signin`: the request bodies Logto's HTTP connectors send.
- :mod:`.service`: the in-process service's client type, and files for a config to point at.
- :mod:`.processes`: ``otp-service serve`` and the recording SMTP sink as processes (async).
- :mod:`.command`: the installed ``otp-service`` command, run or serving (blocking calls).
- :mod:`.replicas`: several service processes on one PostgreSQL schema.
- :mod:`.store`: messages and the accept call the store tests share.
- :mod:`.arrival`: proof that a request has reached its handler.
- :mod:`.fakes`: the SMS providers' and Logto's HTTP fakes; :mod:`.smtp_server` a recording SMTP
  server in-process, :mod:`.recording_smtp` one as a process; :mod:`.tcp_proxy` a proxy a test
  can take down; :mod:`.pg` the tests' PostgreSQL, :mod:`.pg_cluster` a cluster of a test's own.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
