"""Hostile clients against a real ``otp-service serve`` process, and what they cost it.

:class:`Target` starts the service (capture mode, the SMTP intake on, limits off; optionally
under a descriptor limit) and reads its memory from ``/proc`` (``VmRSS``, peak ``VmHWM``).
:class:`Probe` sends a normal ``POST /v1/email`` (and ``GET /healthz``) every few tenths of a
second while an attack runs, keeping each answer's status and latency. Each ``attack_*``
coroutine is one scenario of docs/hostile-input.md; the tests (tests/test_hostile_clients.py)
assert bounds on memory and on the statuses, never on timing. ``python -m
tests.support.hostile [--root DIR] [NAME ...]`` prints the figures the docs quote (``--root``:
another checkout, e.g. the code before a fix).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from . import ROOT
from .fakes.logto import FakeLogto, logto_row
from .ports import free_port

TIMEOUT = aiohttp.ClientTimeout(total=30)


def proc_kib(pid: int, field_name: str) -> int:
    """A ``/proc/<pid>/status`` figure in KiB (``VmRSS``, ``VmHWM``); 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class Target:
    """``python -m otp_service serve`` in capture mode with the SMTP intake, from ``root``."""

    def __init__(
        self,
        folder: Path,
        *,
        root: Path = ROOT,
        descriptors: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port, self.smtp_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base: dict[str, Any] = {
            "store": {"path": str(folder / "outbox.sqlite3")},
            "limits": {"enabled": False},
            "capture": {"smtp": {"host": "127.0.0.1", "port": self.smtp_port}},
        }
        for key, value in (config or {}).items():
            base[key] = base.get(key, {}) | value if isinstance(value, dict) else value
        path = folder / "config.yaml"
        path.write_text(json.dumps(base), encoding="utf-8")
        self.log_path = folder / "service.log"
        self.log = self.log_path.open("w")

        def limit() -> None:
            if descriptors is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "otp_service", "serve", "--config", str(path),
             "--port", str(self.port)],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=limit,
        )  # fmt: skip

    @property
    def rss_mib(self) -> float:
        return proc_kib(self.process.pid, "VmRSS") / 1024

    @property
    def peak_mib(self) -> float:
        return proc_kib(self.process.pid, "VmHWM") / 1024

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.poll() is None, self.log_text()
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/readyz", timeout=TIMEOUT) as r:
                        if r.status == 200:
                            return
                assert time.monotonic() < deadline, self.log_text()
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


class Probe:
    """A normal client during an attack, in a process of its own (the attack's load on this
    process's event loop must not be counted as the service's latency): a send and a health
    check every ``every`` seconds, each answer's status and latency written as a JSON line."""

    def __init__(self, url: str, folder: Path, every: float = 0.25) -> None:
        self.url, self.every = url, every
        self.out = folder / "probe.jsonl"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.hostile", "--probe", self.url,
             "--out", str(self.out), "--every", str(self.every)],
            cwd=ROOT,
        )  # fmt: skip

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)

    def _records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in lines]

    @property
    def sends(self) -> list[tuple[int, float]]:
        return [(r["send"], r["seconds"]) for r in self._records()]

    @property
    def health(self) -> list[int]:
        return [r["health"] for r in self._records()]

    @property
    def worst_seconds(self) -> float:
        return max((s for _, s in self.sends), default=0.0)

    @property
    def worst_health_seconds(self) -> float:
        """The slowest health check (a stall of the service may fall on one, not on a send)."""
        return max((r.get("health_seconds", 0.0) for r in self._records()), default=0.0)

    @property
    def statuses(self) -> list[int]:
        return [status for status, _ in self.sends]


async def probe_loop(url: str, out: Path, every: float) -> None:
    """The probe process's loop (see :class:`Probe`)."""
    n = 0
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        with out.open("a", encoding="utf-8") as file:
            while True:
                n += 1
                body = {"to": f"probe{n}@example.com", "type": "SignIn",
                        "payload": {"code": f"{n % 1000000:06d}"}}  # fmt: skip
                started = time.monotonic()
                try:
                    async with http.post(f"{url}/v1/email", json=body, timeout=TIMEOUT) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, OSError, TimeoutError):
                    status = 0
                seconds = time.monotonic() - started
                started = time.monotonic()
                try:
                    async with http.get(f"{url}/healthz", timeout=TIMEOUT) as r:
                        health = r.status
                except (aiohttp.ClientError, OSError, TimeoutError):
                    health = 0
                record = {"send": status, "seconds": round(seconds, 3), "health": health,
                          "health_seconds": round(time.monotonic() - started, 3)}  # fmt: skip
                file.write(json.dumps(record) + "\n")
                file.flush()
                await asyncio.sleep(every)


# -- hostile mail


def mail_encoded_words(words: int = 24_000) -> bytes:
    """One mail whose Subject is ``words`` encoded words, folded (about 20 bytes each)."""
    subject = "\r\n ".join("=?UTF-8?B?w6k=?=" for _ in range(words))
    return (f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n"
            "Your code is 123456.\r\n").encode()  # fmt: skip


def mail_parts(parts: int = 20_000) -> bytes:
    """One multipart mail of ``parts`` tiny parts."""
    body = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\n{n}\r\n" for n in range(parts))
    return (f"From: a@example.com\r\nTo: b@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=b\r\n\r\n{body}--b--\r\n").encode()  # fmt: skip


def mail_addresses(count: int = 20_000) -> bytes:
    """One mail whose To holds ``count`` addresses, folded."""
    to = ",\r\n ".join(f"u{n}@example.com" for n in range(count))
    return (f"From: a@example.com\r\nTo: {to}\r\nSubject: many\r\n\r\n"
            "Your code is 123456.\r\n").encode()  # fmt: skip


def smtp_send(port: int, data: bytes) -> str:
    """Send ``data`` over SMTP (blocking: run it in a thread); the server's answer."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.ehlo("attacker.example")
            client.mail("a@example.com")
            client.rcpt("b@example.com")
            code, message = client.data(data)
            return f"{code} {message.decode(errors='replace')}"
    except (smtplib.SMTPException, OSError) as exc:
        return f"error {type(exc).__name__}: {exc}"


@dataclass
class Figures:
    """What one scenario cost: peak and final memory, the normal client's experience."""

    name: str
    peak_mib: float
    rss_after_mib: float
    worst_send_seconds: float
    send_statuses: dict[int, int]
    health_statuses: dict[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return json.dumps(self.__dict__)


def _counts(values: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for v in values:
        found[v] = found.get(v, 0) + 1
    return found


async def measure(
    target: Target, name: str, attack: Callable[[Target, dict[str, Any]], Awaitable[None]]
) -> Figures:
    """Run ``attack`` against the ready ``target`` with a :class:`Probe` alongside."""
    probe = Probe(target.url, target.folder)
    extra: dict[str, Any] = {"rss_before_mib": round(target.rss_mib, 1)}
    probe.start()
    try:
        for _ in range(300):  # the probe is up: its first answer is in
            if probe.sends:
                break
            await asyncio.sleep(0.05)
        await attack(target, extra)
        await asyncio.sleep(1.0)  # the probe's last rounds, after the attack
    finally:
        await probe.stop()
    extra["worst_health_seconds"] = round(probe.worst_health_seconds, 2)
    return Figures(
        name,
        round(target.peak_mib, 1),
        round(target.rss_mib, 1),
        round(probe.worst_seconds, 2),
        _counts(probe.statuses),
        _counts(probe.health),
        extra,
    )


async def attack_mail(data: bytes) -> Callable[[Target, dict[str, Any]], Awaitable[None]]:
    async def attack(target: Target, extra: dict[str, Any]) -> None:
        extra["answer"] = await asyncio.to_thread(smtp_send, target.smtp_port, data)

    return attack


async def attack_data_hang(target: Target, extra: dict[str, Any], clients: int = 40) -> None:
    """``clients`` SMTP clients each send 9 MiB of DATA, never the end, then hang up."""
    line = b"x" * 998 + b"\r\n"
    chunk = line * 1024  # 1 MiB

    async def one() -> str:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target.smtp_port)
            await reader.readline()
            for command in (b"EHLO a\r\n", b"MAIL FROM:<a@example.com>\r\n",
                            b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
                writer.write(command)
                await writer.drain()
                while (answer := await reader.readline()) and answer[3:4] == b"-":
                    pass
            for _ in range(9):
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10)
            writer.write(b"Subject: x\r\n")
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.readline(), 1)
            return answer[:3].decode(errors="replace") or "none"
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__
        finally:  # refused mid-DATA too: no socket left for the garbage collector to warn about
            if writer is not None:
                writer.close()

    answers = await asyncio.gather(*(one() for _ in range(clients)))
    extra["peak_during_mib"] = round(target.peak_mib, 1)
    extra["answers"] = {a: answers.count(a) for a in set(answers)}
    await asyncio.sleep(2.0)  # they hung up: what is kept


def captured_counts(target: Target) -> list[int]:
    """How many messages each DATA of the intake captured, from the service's log."""
    text = target.log_path.read_text(encoding="utf-8", errors="replace")
    return [int(n) for n in re.findall(r"SMTP intake: captured (\d+) message", text)]


async def smtp_pipeline(
    port: int, opening: list[bytes], commands: list[bytes], chunk: int = 2000
) -> tuple[dict[str, int], asyncio.StreamReader | None, asyncio.StreamWriter | None]:
    """One SMTP client: the ``opening`` commands one at a time, then every one of ``commands``
    pipelined (``chunk`` per write) while its answers are read. The answers' counts by code
    ("closed": the service hung up before answering them all), and, if it is still open, the
    connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers: dict[str, int] = {}
    try:
        await asyncio.wait_for(reader.readline(), 10)
        for command in opening:
            writer.write(command)
            await writer.drain()
            while (await asyncio.wait_for(reader.readline(), 10))[3:4] == b"-":
                pass
        closed = asyncio.Event()

        async def read() -> None:
            for _ in commands:
                try:
                    line = await reader.readline()
                except ConnectionError:
                    line = b""
                if not line:
                    answers["closed"] = 1
                    break
                code = line[:3].decode(errors="replace")
                answers[code] = answers.get(code, 0) + 1
            closed.set()

        reading = asyncio.create_task(read())
        for start in range(0, len(commands), chunk):
            if closed.is_set():
                break
            writer.write(b"".join(commands[start : start + chunk]))
            try:
                await asyncio.wait_for(writer.drain(), 60)
            except ConnectionError:
                break
        await asyncio.wait_for(reading, 300)
    except BaseException:
        writer.close()
        raise
    if "closed" in answers:
        writer.close()
        return answers, None, None
    return answers, reader, writer


async def smtp_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    """DATA of a small mail with a code on an open session; its answer (the session closed)."""
    try:
        writer.write(b"DATA\r\n")
        await writer.drain()
        if not (await asyncio.wait_for(reader.readline(), 60)).startswith(b"354"):
            return "no 354"
        writer.write(b"From: a@example.com\r\nSubject: flood\r\n\r\nYour code is 482913\r\n.\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 300)).decode(errors="replace").strip()
    finally:
        writer.close()


async def attack_rcpt_flood(target: Target, extra: dict[str, Any], count: int = 100_000) -> None:
    """One SMTP client sends ``count`` pipelined ``RCPT TO``s in one transaction, then (if it
    may still) DATA; then another sends 1,000 ``RCPT TO``s and DATA."""
    opening = [b"EHLO attacker.example\r\n", b"MAIL FROM:<a@example.com>\r\n"]
    rcpts = [b"RCPT TO:<user%07d@example.com>\r\n" % n for n in range(count)]
    answers, reader, writer = await smtp_pipeline(target.smtp_port, opening, rcpts)
    extra["flood_answers"] = answers
    if reader is not None and writer is not None:
        extra["flood_data"] = await smtp_data(reader, writer)
    extra["peak_during_mib"] = round(target.peak_mib, 1)
    answers, reader, writer = await smtp_pipeline(target.smtp_port, opening, rcpts[:1000])
    extra["rcpt_answers"] = answers
    if reader is not None and writer is not None:
        extra["data"] = await smtp_data(reader, writer)
    extra["captured"] = captured_counts(target)


async def attack_command_flood(target: Target, extra: dict[str, Any], count: int = 100_000) -> None:
    """``count`` pipelined ``NOOP``s from one client, which connects again whenever it is
    hung up on; then a normal mail from another."""
    noops, connections = [b"NOOP\r\n"] * count, 0
    answers: dict[str, int] = {}
    while noops:
        connections += 1
        got, _, writer = await smtp_pipeline(target.smtp_port, [b"EHLO a.example\r\n"], noops)
        if writer is not None:
            writer.close()
        for code, n in got.items():
            answers[code] = answers.get(code, 0) + n
        done = sum(n for code, n in got.items() if code[:1] in "245")
        if not done:
            break
        noops = noops[done:]
    extra["answers"], extra["connections"] = answers, connections
    extra["peak_during_mib"] = round(target.peak_mib, 1)
    extra["mail"] = await asyncio.to_thread(smtp_send, target.smtp_port, b"Subject: x\r\n\r\n1\r\n")


async def attack_smtp_idle(target: Target, extra: dict[str, Any], count: int = 1100) -> None:
    """``count`` idle connections to the SMTP intake, held while the probe runs."""
    held: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", target.smtp_port))
        held.append(sock)
        if len(held) % 100 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(4.0)
    for sock in held:
        sock.close()
    extra["held"] = len(held)


async def attack_long_polls(target: Target, extra: dict[str, Any], count: int = 2000) -> None:
    """``count`` ``latest?wait=30`` requests at once, from one client (no token)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(n: int) -> None:
            try:
                async with http.get(
                    f"{target.url}/v1/messages/latest",
                    params={"to": f"nobody{n}@example.com", "wait": "6"},
                    timeout=TIMEOUT,
                ) as r:
                    statuses.append(r.status)
            except (aiohttp.ClientError, OSError, TimeoutError):
                statuses.append(0)

        await asyncio.gather(*(one(n) for n in range(count)))
    extra["poll_statuses"] = _counts(statuses)


async def attack_streams(target: Target, extra: dict[str, Any], readers: int = 150) -> None:
    """``readers`` event-stream readers that never read, while 200 messages of ~60 KB each
    are captured (the sends' payloads are large)."""
    held: list[socket.socket] = []
    for _ in range(readers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", target.port))
        sock.sendall(b"GET /v1/messages/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        held.append(sock)
    big = "x" * 60_000
    async with aiohttp.ClientSession() as http:
        statuses = []
        for n in range(200):
            body = {"to": f"big{n}@example.com", "type": "SignIn",
                    "payload": {"code": "123456", "application": {"name": big}}}  # fmt: skip
            async with http.post(f"{target.url}/v1/email", json=body, timeout=TIMEOUT) as r:
                statuses.append(r.status)
    extra["big_send_statuses"] = _counts(statuses)
    extra["peak_during_mib"] = round(target.peak_mib, 1)
    for sock in held:
        sock.close()


async def attack_connections(
    target: Target, extra: dict[str, Any], slow: int = 1500, idle: int = 3000
) -> None:
    """``slow`` clients trickling their request head and ``idle`` keep-alive connections that
    made one request and then say nothing, for 10 s (a dropped slow client comes back)."""
    held: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()

    async def slow_one() -> None:
        with contextlib.suppress(OSError, ConnectionError):
            _, writer = await asyncio.open_connection("127.0.0.1", target.port)
            held.append(writer)
            while not stop.is_set():  # dropped after the head timeout: come back
                writer.write(b"POST /v1/email HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                with contextlib.suppress(OSError, ConnectionError):
                    while not stop.is_set():
                        writer.write(b"a")
                        await writer.drain()
                        await asyncio.sleep(0.5)
                _, writer = await asyncio.open_connection("127.0.0.1", target.port)
                held.append(writer)  # closed at the end like the first (no socket left behind)

    async def idle_one() -> None:
        with contextlib.suppress(OSError, ConnectionError):
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            held.append(writer)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 10)
            await stop.wait()

    tasks = [asyncio.create_task(slow_one()) for _ in range(slow)]
    tasks += [asyncio.create_task(idle_one()) for _ in range(idle)]
    await asyncio.sleep(10.0)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for writer in held:
        writer.close()
    extra["opened"] = len(held)


async def attack_past_cap(
    target: Target,
    extra: dict[str, Any],
    busy: int = 64,
    clients: int = 500,
    padding: int = 0,
    raw: bool = False,
) -> None:
    """``busy`` connections hold the cap (``server.max_connections``: see :data:`CONFIGS`), each
    with a request whose body never ends (not evictable: their heads are complete); then
    ``clients`` aiohttp clients at once each send a whole request (its payload padded by
    ``padding`` bytes): how many read the 503, and how many see a reset or nothing. ``raw``:
    clients that write their whole request before reading (a write error ignored), on plain
    sockets."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(busy):
        _, writer = await asyncio.open_connection("127.0.0.1", target.port)
        writer.write(b"POST /v1/email HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        held.append(writer)
    await asyncio.sleep(0.3)
    payload = {"code": "123456", "application": {"name": "x" * padding}}
    body = {"to": "a@example.com", "type": "SignIn", "payload": payload}
    data = json.dumps(body)
    request = (
        "POST /v1/email HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n{data}"
    ).encode()

    async def write_then_read() -> str:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.write(request)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            answer = await asyncio.wait_for(reader.read(65536), 10)
            return answer[9:12].decode(errors="replace") if answer else "closed, no answer"
        except ConnectionResetError:
            return "reset"
        except (OSError, TimeoutError) as exc:
            return type(exc).__name__
        finally:
            if writer is not None:
                writer.close()

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> str:
            try:
                async with http.post(f"{target.url}/v1/email", json=body, timeout=TIMEOUT) as r:
                    await r.read()
                    return str(r.status)
            except aiohttp.ClientOSError as exc:  # a reset (errno 104), a broken pipe (32)
                return f"ClientOSError errno {exc.errno}"
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return type(exc).__name__

        client = write_then_read if raw else one
        answers = await asyncio.gather(*(client() for _ in range(clients)))
    extra["answers"] = {a: answers.count(a) for a in sorted(set(answers))}
    for writer in held:
        writer.close()


async def attack_full_disk(target: Target, extra: dict[str, Any]) -> None:
    """The store's filesystem (a 6 MiB tmpfs: see :func:`run`) is filled by another file until
    sends get 503, then the file is removed: the statuses of the sends after that, one every
    0.05 s until one is accepted, the first one's latency and how long until a 200."""
    disk = target.folder / "disk"
    big = {"application": {"name": "x" * 20_000}}

    async def send(http: aiohttp.ClientSession, n: int) -> tuple[int, float]:
        body = {"to": f"u{n}@example.com", "type": "SignIn",
                "payload": {"code": f"{n:06d}", **big}}  # fmt: skip
        started = time.monotonic()
        try:
            async with http.post(f"{target.url}/v1/email", json=body, timeout=TIMEOUT) as r:
                await r.read()
                return r.status, round(time.monotonic() - started, 3)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0, round(time.monotonic() - started, 3)

    async with aiohttp.ClientSession() as http:
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as file:
            for _ in range(6 * 16):
                file.write(b"\0" * 65536)
        full = [(await send(http, n))[0] for n in range(1, 40)]
        extra["while_full"] = _counts(full)
        filler.unlink()
        freed = time.monotonic()
        after: list[tuple[int, float]] = []
        for n in range(100, 700):  # 30 s at most
            after.append(await send(http, n))
            if after[-1][0] == 200:
                break
            await asyncio.sleep(0.05)
        extra["after_room"] = [status for status, _ in after]
        extra["next_send"] = after[0]
        extra["first_200_after_seconds"] = round(time.monotonic() - freed, 3)


# -- hostile templates kept in Logto

# Languages with a bundled template (the next source when Logto's is skipped), each given one
# hostile Logto template; the probe's sends (no locale: the default, en) use Logto's good one.
LOGTO_PLACEHOLDERS = "{{ code }} " * 40_000  # 440 KB
LOGTO_LOOP_BOMB = "{% for a in range(3000) %}{% for b in range(3000) %}x{% endfor %}{% endfor %}"
LOGTO_BAD: dict[str, tuple[str, dict[str, Any]]] = {
    "logto_placeholders": ("fr", logto_row("fr", "SignIn", "Logto fr {{code}}", LOGTO_PLACEHOLDERS)),
    "logto_loop_bomb": ("ja", logto_row("ja", "SignIn", "Logto ja {{code}}", LOGTO_LOOP_BOMB)),
    "logto_crlf": ("zh-CN", logto_row(
        "zh-CN", "SignIn", "Hi{{ '\\r\\n' }}Bcc: victim@example.com", "<p>{{code}}</p>")),
}  # fmt: skip
LOGTO_ATTACKS = {"logto_templates": tuple(LOGTO_BAD)} | {name: (name,) for name in LOGTO_BAD}


def logto_good() -> dict[str, Any]:
    return logto_row("en", "SignIn", "Logto en {{code}}", "<p>Your code: {{code}}</p>")


def attack_logto(
    logto: FakeLogto, names: tuple[str, ...], rounds: int = 5
) -> Callable[[Target, dict[str, Any]], Awaitable[None]]:
    """Logto's templates change under the running service (read every second) to hostile ones:
    40,000 placeholders (fr), a loop bomb (ja), a subject with CR/LF (zh-CN). Once the service
    has read them, ``rounds`` sends in each of those languages: their statuses and latencies,
    and the source and language each captured message was rendered from. The whole attack
    gives up after 90 s (the code before the bounds compiled the first on the event loop for
    minutes)."""
    bad = {LOGTO_BAD[name][0]: LOGTO_BAD[name][1] for name in names}

    async def attack(target: Target, extra: dict[str, Any]) -> None:
        statuses: list[int] = []
        seconds: list[float] = []
        used: dict[str, list[str]] = {language: [] for language in bad}

        async def sends(http: aiohttp.ClientSession) -> None:
            listed = len(logto.list_requests)
            logto.set_templates(logto_good(), *bad.values())
            # Read twice since: the next read starts once the first answer has been applied.
            for _ in range(900):
                if len(logto.list_requests) >= listed + 2:
                    break
                await asyncio.sleep(0.1)
            for n in range(rounds):
                for language in bad:
                    body = {"to": f"victim{n}@example.com", "type": "SignIn",
                            "payload": {"code": f"{n:06d}", "locale": language}}  # fmt: skip
                    started = time.monotonic()
                    try:
                        async with http.post(
                            f"{target.url}/v1/email", json=body, timeout=TIMEOUT
                        ) as r:
                            answer = await r.json(content_type=None)
                            statuses.append(r.status)
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        statuses.append(0)
                        continue
                    finally:
                        seconds.append(round(time.monotonic() - started, 3))
                    if r.status == 200:
                        url = f"{target.url}/v1/messages/{answer['id']}"
                        async with http.get(url, timeout=TIMEOUT) as r:
                            message = await r.json()
                        used[language].append(f"{message.get('source')}/{message.get('locale')}")

        async with aiohttp.ClientSession() as http:
            try:
                await asyncio.wait_for(sends(http), 90)
            except TimeoutError:
                extra["gave_up_after_90s"] = True
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(f"{target.url}/readyz", timeout=TIMEOUT) as r:
                    ready = await r.json(content_type=None)
                    extra["logto_state"] = ready.get("logto_templates", {}).get("state")
        extra["hostile_send_statuses"] = _counts(statuses)
        extra["worst_hostile_send_seconds"] = max(seconds, default=0.0)
        extra["rendered_from"] = {k: _counts_text(v) for k, v in used.items()}

    return attack


def _counts_text(values: list[str]) -> dict[str, int]:
    return {v: values.count(v) for v in sorted(set(values))}


async def run(name: str, folder: Path, root: Path) -> Figures:
    """One scenario by name against a fresh service from ``root``."""
    descriptors = 1024 if name in ("smtp_idle", "connections") else None
    config = CONFIGS.get(name)
    with contextlib.ExitStack() as stack:
        logto: FakeLogto | None = None
        if name in LOGTO_ATTACKS:  # good templates at start, hostile ones during the attack
            logto = stack.enter_context(FakeLogto())
            logto.set_templates(logto_good())
            config = {"templates": {"logto": logto.config(refresh_seconds=1)}}
        return await _run(name, folder, root, descriptors, config, logto)
    raise AssertionError("unreachable")  # mypy: the with block returns


async def _run(
    name: str,
    folder: Path,
    root: Path,
    descriptors: int | None,
    config: dict[str, Any] | None,
    logto: FakeLogto | None,
) -> Figures:
    if name == "full_disk":  # a 6 MiB tmpfs for the store (mounting one needs root)
        disk = folder / name / "disk"
        disk.mkdir(parents=True, exist_ok=True)
        mount = ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)]
        await asyncio.to_thread(subprocess.run, mount, check=True)
        config = {"store": {"path": str(disk / "outbox.sqlite3")}}
    target = Target(folder / name, root=root, descriptors=descriptors, config=config)
    try:
        await target.ready()
        if name == "full_disk":
            return await measure(target, name, attack_full_disk)
        if logto is not None:
            return await measure(target, name, attack_logto(logto, LOGTO_ATTACKS[name]))
        attacks: dict[str, Callable[[Target, dict[str, Any]], Awaitable[None]]] = {
            "encoded_words": await attack_mail(mail_encoded_words()),
            "mime_parts": await attack_mail(mail_parts()),
            "addresses": await attack_mail(mail_addresses()),
            "data_hang": attack_data_hang,
            "smtp_idle": attack_smtp_idle,
            "long_polls": attack_long_polls,
            "streams": attack_streams,
            "streams_per_client_cap_off": attack_streams,
            "connections": attack_connections,
            "rcpt_flood": attack_rcpt_flood,
            "command_flood": attack_command_flood,
        }
        if name in PAST_CAP:
            clients, padding, raw = PAST_CAP[name]
            return await measure(
                target, name, lambda t, extra: attack_past_cap(t, extra, 64, clients, padding, raw)
            )
        return await measure(target, name, attacks[name])
    finally:
        target.stop()
        if name == "full_disk":
            umount = ["umount", "-l", str(folder / name / "disk")]
            await asyncio.to_thread(subprocess.run, umount, check=False)


# past the connection cap: (clients at once, payload padding, raw write-then-read clients)
PAST_CAP: dict[str, tuple[int, int, bool]] = {
    "past_cap_50": (50, 0, False),
    "past_cap": (500, 0, False),
    "past_cap_1m_50": (50, 1_000_000, False),
    "past_cap_1m": (500, 1_000_000, False),
    "past_cap_raw_1m_50": (50, 1_000_000, True),
    "past_cap_raw_1m": (500, 1_000_000, True),
    "past_cap_raw_8m_50": (50, 8_000_000, True),
    "past_cap_raw_8m": (500, 8_000_000, True),
}
CONFIGS: dict[str, dict[str, Any]] = {
    # every reader admitted: what bounds them is then each one's buffer
    "streams_per_client_cap_off": {"capture": {"max_waiting_per_client": 256}},
    # a cap of 64, held by 64 requests whose body never ends (for longer than the attack)
    **{
        name: {"server": {"max_connections": 64, "header_timeout_seconds": 20}} for name in PAST_CAP
    },
}
NAMES = ("encoded_words", "mime_parts", "addresses", "data_hang", "smtp_idle", "long_polls",
         "streams", "connections", "rcpt_flood", "command_flood", "logto_templates")  # fmt: skip


def _on_term(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", help="be the probe process for this service URL")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--every", type=float, default=0.25)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/otp-hostile"))
    parser.add_argument("names", nargs="*", default=list(NAMES))
    args = parser.parse_args()
    if args.probe:
        signal.signal(signal.SIGTERM, _on_term)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(probe_loop(args.probe, args.out, args.every))
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 20000), max(hard, 20000)))
    for name in args.names:
        figures = asyncio.run(run(name, args.folder, args.root))
        print(figures.line(), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
