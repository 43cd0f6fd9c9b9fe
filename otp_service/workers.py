"""``serve --workers N``: N service processes on one port, and a supervisor that keeps them.

Each worker is a whole ``otp-service serve`` process binding the same address with
``SO_REUSEPORT`` (the kernel spreads new connections across them), sharing the PostgreSQL store:
one Python process uses one core, N use N. The supervisor starts them, starts a worker again
when one dies (at most once a second per slot, so a crash loop does not spin), and on SIGTERM or
SIGINT passes the signal on and waits for every worker to drain (finish in-flight requests and
deliveries within ``delivery.shutdown_grace_seconds``). A worker still running well after that
is killed. Workers that keep exiting right after their start (a config or schema problem)
stop the supervisor with exit code 1 rather than restart forever.

Listeners that must exist once per replica are the supervisor's: it binds the metrics port
(``--metrics-port``) and the SMTP intake (``capture.smtp``) itself, before any worker starts,
and hands each worker the listening socket (``--metrics-fd``, ``--intake-fd``): one listener,
whichever worker accepts a connection. A port already in use is reported as that, up front.
Metrics: every worker writes to one folder (``PROMETHEUS_MULTIPROC_DIR``, made here and removed
at exit), so a scrape answered by any worker shows the sum over all of them
(:mod:`otp_service.metrics`); a dead worker's live gauges are dropped, its counters kept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from .config import Config
from .metrics import MULTIPROC_ENV

log = logging.getLogger("otp_service.workers")


class Supervisor:
    """Runs ``command`` ``count`` times and keeps that many running until told to stop."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        grace: float,
        env: Mapping[str, str] | None = None,
        fds: Sequence[int] = (),
        metrics_dir: str | None = None,
    ) -> None:
        self.command = list(command)
        self.count = count
        self.grace = grace
        self.env = dict(env) if env is not None else None
        self.fds = tuple(fds)
        self.metrics_dir = metrics_dir
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started_at = [0.0] * count
        self.restarts = 0
        self._stopping = False

    def _start(self, slot: int) -> None:
        self.workers[slot] = subprocess.Popen(  # noqa: S603 (our own command)
            self.command, env=self.env, pass_fds=self.fds
        )
        self.started_at[slot] = time.monotonic()

    def _buried(self, worker: subprocess.Popen[bytes]) -> None:
        """A worker is gone: its live gauges stop counting (its counters stay in the sums)."""
        if self.metrics_dir is not None:
            with contextlib.suppress(OSError):
                mark_process_dead(worker.pid, self.metrics_dir)  # type: ignore[no-untyped-call]

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
                self._buried(worker)
                early_exits = early_exits + 1 if lived < 30.0 else 0
                if early_exits >= 3 * self.count:  # a config or schema problem: give up
                    log.error(
                        "supervisor: workers keep exiting at start (the last with exit code "
                        "%s; its own message, above, names the cause); stopping",
                        worker.returncode,
                    )
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


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket the workers will share (OSError when it cannot be bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    return sock


def _port_free(host: str, port: int) -> OSError | None:
    """Whether the workers can bind ``host:port`` with SO_REUSEPORT (nobody else holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _cannot_bind(what: str, host: str, port: int, exc: OSError, fix: str) -> int:
    cause = "is in use by another process" if exc.errno == errno.EADDRINUSE else f"failed: {exc}"
    print(f"cannot start: {what} {host}:{port} {cause}\n  fix: {fix}", file=sys.stderr)
    return 1


def _metrics_folder() -> str | None:
    """A new folder for the workers' metrics files: in the temporary folder, else in $HOME (a
    read-only container whose only writable place is its volume)."""
    for where in (None, os.environ.get("HOME")):
        with contextlib.suppress(OSError):
            return tempfile.mkdtemp(prefix="otp-service-metrics-", dir=where)
    return None


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
        print(
            f"refusing --workers {workers} with port 0: the workers share one port, which "
            "must be known before they start.\n  fix: pass --port (or set server.port) to a "
            "port other than 0, or run one worker",
            file=sys.stderr,
        )
        return 2
    server = config.server
    if (taken := _port_free(server.host, server.port)) is not None:
        fix = "stop what holds it, or choose another --port"
        return _cannot_bind("the port", server.host, server.port, taken, fix)
    listeners: list[socket.socket] = []
    options: list[str] = []
    try:
        if server.metrics_port is not None:
            host = server.metrics_bind_host
            try:
                listeners.append(_bind(host, server.metrics_port))
            except OSError as exc:
                fix = "stop what holds it, or choose another --metrics-port (server.metrics_port)"
                return _cannot_bind("the metrics port", host, server.metrics_port, exc, fix)
            options += ["--metrics-fd", str(listeners[-1].fileno())]
        if (smtp := config.capture.smtp) is not None:
            try:
                listeners.append(_bind(smtp.host, smtp.port))
            except OSError as exc:
                fix = "stop what holds it, or choose another port for the SMTP intake"
                return _cannot_bind("the SMTP intake", smtp.host, smtp.port, exc, fix)
            options += ["--intake-fd", str(listeners[-1].fileno())]
        folder = _metrics_folder()
        if folder is None:
            print(
                "cannot start: no writable folder for the workers' metrics files (TMPDIR, "
                "/tmp and $HOME are read-only)\n  fix: set TMPDIR to a writable folder "
                "(in Docker with --read-only: a tmpfs, or the volume)",
                file=sys.stderr,
            )
            return 1
        try:
            env = os.environ | {MULTIPROC_ENV: folder}
            print(f"{banner}\n    workers: {workers} (store: {config.store.shown})", flush=True)
            supervisor = Supervisor(
                command + options, workers, config.delivery.shutdown_grace_seconds,
                env=env, fds=[s.fileno() for s in listeners], metrics_dir=folder,
            )  # fmt: skip
            return supervisor.run()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        for listener in listeners:
            listener.close()


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
