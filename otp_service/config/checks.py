"""What a valid config may still get wrong: refusals (``serve`` will not start) and warnings.

``check-config`` and ``serve`` call the same functions, so ``check-config`` reports everything
``serve`` would refuse, and the start banner repeats the warnings ``check-config`` prints.
"""

from __future__ import annotations

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
    return problems


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
