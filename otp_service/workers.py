"""``serve --workers N``: N service processes on one port, and a supervisor that keeps them.

Each worker is a whole ``otp-service serve`` process binding the same address with
``SO_REUSEPORT`` (the kernel spreads new connections across them), sharing the PostgreSQL store:
one Python process uses one core, N use N. The supervisor starts them, starts a worker again
when one dies (at most once a second per slot, so a crash loop does not spin), and on SIGTERM or
SIGINT passes the signal on and waits for every worker to drain (finish in-flight requests and
deliveries within ``delivery.shutdown_grace_seconds``). A worker still running well after that
is killed. Workers that keep exiting right after their start (a config or schema problem)
stop the supervisor with exit code 1 rather than restart forever.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .config import Config

log = logging.getLogger("otp_service.workers")


class Supervisor:
    """Runs ``command`` ``count`` times and keeps that many running until told to stop."""

    def __init__(self, command: Sequence[str], count: int, grace: float) -> None:
        self.command = list(command)
        self.count = count
        self.grace = grace
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started_at = [0.0] * count
        self.restarts = 0
        self._stopping = False

    def _start(self, slot: int) -> None:
        self.workers[slot] = subprocess.Popen(self.command)  # noqa: S603 (our own command)
        self.started_at[slot] = time.monotonic()

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code for the supervisor."""
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for slot in range(self.count):
            self._start(slot)
        log.info("supervisor: %d workers started", self.count)
        early_exits = 0  # workers in a row that died before they were up for a while
        while not self._stopping:
            for slot, worker in enumerate(self.workers):
                if worker is None or worker.poll() is None:
                    continue
                lived = time.monotonic() - self.started_at[slot]
                if lived < 1.0:
                    continue  # died right after its start: wait a moment before the next
                early_exits = early_exits + 1 if lived < 30.0 else 0
                if early_exits >= 3 * self.count:  # a config or schema problem: give up
                    log.error("supervisor: workers keep exiting at start; stopping")
                    self.drain()
                    return 1
                log.error(
                    "supervisor: worker pid=%d exited with %s; starting another",
                    worker.pid,
                    worker.returncode,
                )
                self.restarts += 1
                self._start(slot)
            time.sleep(0.1)
        return self.drain()

    def drain(self) -> int:
        """Pass SIGTERM to every worker and wait for each to finish its work."""
        running = [w for w in self.workers if w is not None and w.poll() is None]
        log.info("supervisor: draining %d worker(s)", len(running))
        for worker in running:
            worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 15.0
        failed = False
        for worker in running:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("supervisor: worker pid=%d did not stop; killing it", worker.pid)
                worker.kill()
                worker.wait()
                failed = True
        return 1 if failed else 0


def supervise(config: Config, workers: int, command: list[str], banner: str) -> int:
    """``serve --workers N``: refused with SQLite or without a fixed port, else supervised."""
    if not config.store.url:
        print(
            f"refusing --workers {workers} with the SQLite outbox: a SQLite file belongs "
            "to one process (a second one would wait for the first, then give up).\n"
            "  fix: set store.url to a PostgreSQL database (shared by every worker), or run "
            "one worker",
            file=sys.stderr,
        )
        return 2
    if config.server.port == 0:
        print("--workers needs a fixed --port: workers share one port", file=sys.stderr)
        return 2
    print(f"{banner}\n    workers: {workers} (store: {config.store.shown})", flush=True)
    return Supervisor(command, workers, config.delivery.shutdown_grace_seconds).run()


def worker_command(argv: Sequence[str]) -> list[str]:
    """The ``serve`` command line of one worker: the supervisor's own, without ``--workers``."""
    args: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        args.append(arg)
    return [sys.executable, "-m", "otp_service", *args, "--worker"]
