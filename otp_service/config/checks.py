"""What a valid config may still get wrong: refusals (``serve`` will not start) and warnings.

``check-config`` and ``serve`` call the same functions, so ``check-config`` reports everything
``serve`` would refuse, and the start banner repeats the warnings ``check-config`` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigProblem
from .registry import sending, spoken
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
    return found
