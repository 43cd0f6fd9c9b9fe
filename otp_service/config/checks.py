"""What a valid config may still get wrong: refusals (``serve`` will not start) and warnings.

``check-config`` and ``serve`` call the same functions, so ``check-config`` reports everything
``serve`` would refuse, and the start banner repeats the warnings ``check-config`` prints.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..errors import ConfigProblem
from .registry import BY_NAME, on, sending, spoken
from .settings import Config, is_loopback


def _writable_folder(path: str) -> bool:
    """Whether the folder of ``path`` exists and is writable, or could be created."""
    folder = Path(path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def refusals(config: Config) -> list[ConfigProblem]:
    """Problems that make ``serve`` refuse to start, although each field is valid."""
    server = config.server
    problems = []
    if not config.auth.tokens and not is_loopback(server.host) and not server.allow_unauthenticated:
        problems.append(
            ConfigProblem(
                "server.host",
                f"refusing to listen on {server.host} without auth.tokens: anyone who can reach "
                "it could send messages and read captured codes",
                "add auth.tokens to the config, or pass --allow-unauthenticated "
                "(server.allow_unauthenticated: true) if a proxy guards it",
            )
        )
    store = config.store.path  # only when it is the store: store.url selects PostgreSQL
    if not config.store.url and store != ":memory:" and not _writable_folder(store):
        problems.append(
            ConfigProblem(
                "store.path",
                f"cannot be created or written: {store}",
                "point store.path at a writable folder (in Docker: the mounted volume)",
            )
        )
    return problems + _port_clashes(config)


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _addresses(host: str) -> set[_Address] | None:
    """What binding ``host`` takes: "" and "::" every address, "0.0.0.0" every IPv4 one;
    None for a name other than localhost (not resolved here)."""
    name = host.strip("[]").lower()
    if name in ("", "localhost"):
        return {ipaddress.ip_address("::" if name == "" else "127.0.0.1"),
                ipaddress.ip_address("::1")}  # fmt: skip
    try:
        return {ipaddress.ip_address(name)}
    except ValueError:
        return None


def _covers(a: _Address, b: _Address) -> bool:
    # "::" without IPV6_V6ONLY (the HTTP listener, the workers' shared sockets) takes IPv4 too
    return a == b or (a.is_unspecified and (a.version == 6 or b.version == 4))


def _overlap(a: str, b: str) -> bool:
    """Whether listening on ``a`` and on ``b`` with one port would clash."""
    if a.strip("[]").lower() == b.strip("[]").lower():
        return True
    first, second = _addresses(a), _addresses(b)
    if first is None or second is None:  # a name: it clashes with a wildcard address
        known = first or second or set()
        return any(address.is_unspecified for address in known)
    return any(_covers(x, y) or _covers(y, x) for x in first for y in second)


def _port_clashes(config: Config) -> list[ConfigProblem]:
    """Two of this service's listeners on one port: the second could not bind (and under
    ``--workers`` the workers would keep failing to start)."""
    server = config.server
    listeners = [("server.port", "the HTTP service", server.host, server.port, "--port")]
    if server.metrics_port is not None:
        host = server.metrics_bind_host
        listeners.append(
            ("server.metrics_port", "/metrics", host, server.metrics_port, "--metrics-port")
        )
    if (smtp := config.capture.smtp) is not None:
        listeners.append(("capture.smtp.port", "the SMTP intake", smtp.host, smtp.port, ""))
    problems = []
    for i, (path, what, host, port, option) in enumerate(listeners):
        for first_path, first, first_host, first_port, _ in listeners[:i]:
            if port == 0 or port != first_port or not _overlap(host, first_host):
                continue
            fix = f"choose another port for {what} ({option + ' or ' if option else ''}{path})"
            if host != first_host:
                fix += ", or addresses that do not overlap (:: covers every address, 0.0.0.0 "
                fix += "every IPv4 one)"
            problems.append(
                ConfigProblem(
                    path,
                    f"is {port}, as {first_path} is: {what} on {_shown(host, port)} and {first} "
                    f"on {_shown(first_host, port)} cannot both listen",
                    fix,
                )
            )
    return problems


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def warnings(config: Config) -> list[ConfigProblem]:
    """Configurations that run, but most likely not as the operator meant."""
    found = []
    for name in dict(config.email.sections):
        if name != config.email.provider:
            found.append(
                ConfigProblem(
                    f"email.{name}",
                    f"is configured but email.provider is {config.email.provider}: no email is "
                    f"sent through {name}, every one goes to {config.email.provider}",
                    f"set email.provider: {name} (or remove email.{name})",
                )
            )
    used = config.sms.provider_names
    for name in dict(config.sms.sections):
        if name not in used:
            found.append(
                ConfigProblem(
                    f"sms.{name}",
                    "is configured but neither sms.provider nor any sms.routes entry uses it: "
                    "no SMS goes through it",
                    f"set sms.provider: {name}, or list it in sms.routes (or remove sms.{name})",
                )
            )
    # A message's text is composed once, before routing picks a provider: only the first
    # connector JSON that carries SMS texts provides them (services.build_library).
    carrying = [n for n in dict(config.sms.sections) if BY_NAME[n].texts is not None]
    for name in carrying[1:]:
        found.append(
            ConfigProblem(
                f"sms.{name}.templates",
                f"are not used: every SMS text comes from sms.{carrying[0]}.templates (a text "
                "is written once, before a route picks the provider), whichever provider sends",
                f"keep the SMS texts in sms.{carrying[0]}.templates (or in template files under "
                "templates.directory)",
            )
        )
    tokens = config.auth.tokens
    if tokens and all(token.unrestricted for token in tokens):
        found.append(
            ConfigProblem(
                "auth.tokens",
                "every token has every scope (send, read, admin): the one Logto holds could "
                "also read messages and delete them, and Logto shows its failed request "
                "(Authorization header included) to the end user when this service is "
                "unreachable",
                "give Logto a token of its own with scopes: [send], e.g. - {token: "
                '"${LOGTO_TOKEN}", scopes: [send]}',
            )
        )
    if "*" in config.server.allowed_hosts:
        found.append(
            ConfigProblem(
                "server.allowed_hosts",
                'holds "*": any Host is answered, so a web page that points its own DNS name '
                "at this service (DNS rebinding) can read what it answers",
                "list the names the service is reached by instead (otp.example.com, "
                '"*.example.com"); loopback, IPs and single-label names need no entry',
            )
        )
    captured = config.captured_channels()
    if captured and not is_loopback(config.server.host):
        found.append(
            ConfigProblem(
                "server.host",
                f"listens on {config.server.host} while {' and '.join(captured)} "
                "messages are captured: they are kept here and shown at /v1/messages and "
                "/inbox, never delivered to anyone",
                f"configure a real provider (email.provider: {spoken(sending('email'))}, "
                f"sms.provider: {spoken(sending('sms'))}), or listen on 127.0.0.1 for local "
                "testing",
            )
        )
    found += _receipt_warnings(config)
    return found


def _receipt_warnings(config: Config) -> list[ConfigProblem]:
    """Delivery receipts that cannot arrive, or that anyone could forge."""
    found = []
    used = [p for p in on("sms") if p.name in config.sms.provider_names]
    calls_back = [p.name for p in used if p.calls_back]
    if calls_back and config.server.public_url is None:
        found.append(
            ConfigProblem(
                "server.public_url",
                f"is not set: {spoken(calls_back, 'and')} cannot be told where to send "
                "delivery receipts with each SMS (only a URL set in the provider's console works)",
                "set server.public_url to the URL providers reach this service at, e.g. "
                "https://otp.example.com (see docs/receipts.md)",
            )
        )
    sections = dict(config.sms.sections)
    for p in used:
        section = sections.get(p.name)
        if p.unsigned_receipts is not None and section is not None and p.unsigned_receipts(section):
            found.append(
                ConfigProblem(
                    f"sms.{p.name}",
                    f"takes {p.title}'s delivery receipts unsigned: anyone who learns a message "
                    "id and its number can post one",
                    f"turn on signed webhooks at {p.title} and copy its signature secret here "
                    "(see docs/receipts.md)",
                )
            )
    return found
