"""The operator's commands that do not serve: check a config (and Logto's credentials), migrate."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

from ..config import SCOPES, Config, ServerConfig, is_loopback
from ..config.checks import refusals, warnings
from ..config.logto import LogtoConfig
from ..errors import ConfigError, LogtoApiError
from ..logto.client import LogtoClient, LogtoTemplate
from ..services import build_library
from ..store.migrations import LATEST


def check_config(config: Config, file: str, *, online: bool) -> int:
    """``check-config``: what serve would refuse or warn about, and what is configured."""
    if problems := refusals(config):  # what serve would refuse, with serve's exit code
        raise ConfigError(problems)
    found = warnings(config)
    print(f"{file}: OK" + (f", {len(found)} warning(s)" if found else ""))
    section = dict(config.email.sections).get(config.email.provider)
    target = getattr(section, "target", None)  # the server, for providers that have one
    print(f"  email: {config.email.provider}" + (f" ({target})" if target else ""))
    print(f"  sms:   {config.sms.provider}")
    smtp = config.capture.smtp
    print(
        f"  SMTP intake: {smtp.host}:{smtp.port} (mail sent there is captured)"
        if smtp
        else "  SMTP intake: off"
    )
    tokens = config.auth.tokens
    scopes = " | ".join(", ".join(s for s in SCOPES if s in t.scopes) for t in tokens)
    print(f"  auth:  {len(tokens)} token(s)" + (f" ({scopes})" if tokens else ""))
    print(f"  hosts: {answered_hosts(config.server)}")
    store = config.store
    if store.url:
        print(f"  store: postgresql {store.shown} (schema {store.schema}, pool {store.pool_size})")
    else:
        print(f"  store: sqlite {store.path}")
    for problem in found:
        print(f"WARNING {problem.path}: {problem.problem}\n    fix: {problem.fix}")
    return _check_logto(config) if online else 0


async def read_logto(logto: LogtoConfig) -> tuple[list[LogtoTemplate], list[str]]:
    client = LogtoClient(logto)
    try:
        return await client.email_templates()
    finally:
        await client.close()


def _check_logto(config: Config) -> int:
    """Try templates.logto's credentials; list the templates found per language."""
    logto = config.templates.logto
    if logto is None:
        print("  logto: not configured (templates.logto): nothing to check online")
        return 0
    try:
        rows, unusable = asyncio.run(read_logto(logto))
    except LogtoApiError as exc:
        print(f"  logto: FAILED: {exc.message}", file=sys.stderr)
        return 1
    library = build_library(config)
    broken = unusable + library.use_logto(rows)
    failing = library.render_problems(logto=True)
    print(f"  logto: {logto.endpoint}: credentials accepted, {len(rows)} email template(s)")
    for tag, count in sorted(Counter(row.language_tag for row in rows).items()):
        types = sorted(row.template_type for row in rows if row.language_tag == tag)
        print(f"    {tag}: {count} ({', '.join(types)})")
    for problem in broken:
        print(f"    does not compile (other templates will be used): {problem}", file=sys.stderr)
    for failed in failing:
        print(
            f"    {failed.path}: {failed.problem} (other templates will be used)", file=sys.stderr
        )
    return 1 if broken or failing else 0


async def _migrate(config: Config) -> list[int]:
    from ..store.postgres import PostgresStore

    assert config.store.url is not None
    return await PostgresStore(config.store.url, schema=config.store.schema).migrate_only()


def migrate(config: Config) -> int:
    """``migrate``: apply the PostgreSQL schema migrations alone (before a rolling deploy)."""
    if not config.store.url:
        print("nothing to migrate: store.url is not set (SQLite creates its schema itself)")
        return 0
    try:
        applied = asyncio.run(_migrate(config))
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach {config.store.shown}: {exc}", file=sys.stderr)
        return 1
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    print(f"schema {config.store.schema} at version {LATEST}: {done}")
    return 0


def answered_hosts(server: ServerConfig) -> str:
    """The Host names the service answers to, in words (see otp_service.http.hosts)."""
    if "*" in server.allowed_hosts:
        return "any (server.allowed_hosts holds *)"
    shown = ["loopback"]
    if server.host not in ("0.0.0.0", "::", "") and not is_loopback(server.host):  # noqa: S104
        shown.append(server.host)
    if not is_loopback(server.host):
        shown.append("IP addresses, single-label names, *.internal, *.svc")
    return ", ".join(shown + list(server.allowed_hosts))
