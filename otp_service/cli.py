"""The ``otp-service`` command: serve, send, render, check-config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from .config import Config, is_loopback, load_config
from .config.logto import LogtoConfig
from .errors import (
    ConfigError,
    ConfigProblem,
    LogtoApiError,
    OtpServiceError,
    ProviderError,
)
from .http.app import SERVICES, create_app
from .http.banner import banner
from .http.connections import listen
from .logto.client import LogtoClient, LogtoTemplate
from .message.compose import Channel, SendRequest
from .message.templates import TemplateLibrary
from .services import build_library, build_services
from .store.migrations import LATEST
from .text.segments import analyse
from .workers import supervise, worker_command

log = logging.getLogger("otp_service")


def _check_sms_length(config: Config, library: TemplateLibrary) -> list[ConfigProblem]:
    problems = []
    for where, text in library.sms_samples():
        encoding = analyse(text)
        if encoding.segments > config.sms.max_segments:
            problems.append(
                ConfigProblem(
                    where,
                    f"renders to {encoding.segments} SMS segments ({encoding.encoding}, "
                    f"{encoding.units} units with a 6-digit code)",
                    f"shorten it, or raise sms.max_segments (now {config.sms.max_segments})",
                )
            )
    return problems


def _load(path: str | None) -> Config:
    config = load_config(path)
    library = build_library(config)  # compiles every template: a broken one is a config error
    if problems := _check_sms_length(config, library):
        raise ConfigError(problems)
    return config


def _print_problems(error: ConfigError) -> None:
    print(f"configuration has {len(error.problems)} problem(s):", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem.path}: {problem.problem}\n      fix: {problem.fix}", file=sys.stderr)


async def _serve(config: Config, access_log: bool, worker: bool = False) -> None:
    app = create_app(config)
    grace = config.delivery.shutdown_grace_seconds
    runner = web.AppRunner(
        app,
        access_log=log if access_log else None,
        handle_signals=False,
        shutdown_timeout=grace,  # in-flight requests; the outbox gets the same grace after
        keepalive_timeout=config.server.keepalive_seconds,
    )
    await runner.setup()
    listener = await listen(
        runner,
        config.server.host,
        config.server.port,
        header_timeout=config.server.header_timeout_seconds,
        max_connections=config.server.max_connections,
        reuse_port=worker,  # a worker shares the port with its siblings (SO_REUSEPORT)
    )
    port, guard = listener.port, listener.guard
    host = config.server.host
    shown = f"[{host}]" if ":" in host else host
    intake = app[SERVICES].intake
    smtp_port = intake.port if intake is not None else None
    if not worker:  # the supervisor printed it once for all workers
        print(banner(config, f"http://{shown}:{port}", smtp_port), flush=True)
    if guard.cap < config.server.max_connections:
        log.warning(
            "at most %d connections (the descriptor limit, ulimit -n, leaves no room for "
            "server.max_connections=%d)", guard.cap, config.server.max_connections,
        )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        # New sends get 503 shutting_down (and readiness fails) while the listener stays open
        # for server.drain_seconds; then the listener closes without resetting the backlog or
        # a request half sent (http/connections.py), and in-flight requests finish. (Answers
        # do not force Connection: close: closing right after an answer reset some clients
        # before they read it.)
        app[SERVICES].outbox.accepting = False
        log.info("shutting down: answering 503 for %g s", config.server.drain_seconds)
        await asyncio.sleep(config.server.drain_seconds)
        await listener.close()
        log.info("shutting down: finishing in-flight deliveries (up to %g s)", grace)
        await runner.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    server = replace(
        config.server,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
        allow_unauthenticated=args.allow_unauthenticated or config.server.allow_unauthenticated,
    )
    config = replace(config, server=server)
    if not config.auth.tokens and not is_loopback(server.host) and not server.allow_unauthenticated:
        print(
            f"refusing to listen on {server.host} without auth.tokens: anyone who can reach it "
            "could "
            "send messages and read captured codes.\n  fix: add auth.tokens to the config, or pass "
            "--allow-unauthenticated (server.allow_unauthenticated: true) if a proxy guards it",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        return _supervise(config, args)
    try:
        asyncio.run(_serve(config, args.access_log, worker=args.worker))
    except (OSError, sqlite3.Error) as exc:
        fix = "the database is reachable" if config.store.url else "store.path is writable"
        print(
            f"cannot start: {exc}\n  (outbox: {config.store.shown}; listening: "
            f"{server.host}:{server.port})\n  fix: check {fix} and the port is free",
            file=sys.stderr,
        )
        return 1
    return 0


def _supervise(config: Config, args: argparse.Namespace) -> int:
    host = config.server.host
    base = f"http://{f'[{host}]' if ':' in host else host}:{config.server.port}"
    return supervise(config, args.workers, worker_command(args.argv), banner(config, base))


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for key in ("code", "link", "locale"):
        if getattr(args, key, None) is not None:
            payload[key] = getattr(args, key)
    if getattr(args, "payload", None):
        extra = json.loads(args.payload)
        if not isinstance(extra, dict):
            raise OtpServiceError("--payload must be a JSON object")
        payload.update(extra)
    return payload


def cmd_render(args: argparse.Namespace) -> int:
    config = _load(args.config)
    library = build_library(config)
    payload = _payload(args)
    if config.templates.logto is not None and args.channel == "email":
        try:  # what the service would send: with the templates kept in Logto
            rows, _ = asyncio.run(_read_logto(config.templates.logto))
            for problem in library.use_logto(rows):
                print(f"Logto template skipped (does not compile): {problem}", file=sys.stderr)
        except LogtoApiError as exc:
            print(f"Logto's templates not used: {exc.message}", file=sys.stderr)
    if args.channel == "email":
        email = library.render_email(args.type, payload)
        print(f"Locale:  {email.locale or '(connector template)'} [{email.source}]")
        print(f"Subject: {email.subject}\n\n{email.text}")
        if email.html is not None and not args.no_html:
            print(f"--- text/html ---\n{email.html}")
    else:
        sms = library.render_sms(args.type, payload)
        print(f"Locale: {sms.locale} [{sms.source}]\n\n{sms.text}")
    return 0


async def _send_one(config: Config, channel: Channel, request: SendRequest) -> int:
    services = build_services(config)
    try:
        message = services.composer.compose(channel, request)
        result = await services.dispatcher.deliver(message)
    except ProviderError as exc:
        print(
            f"FAILED ({'transient' if exc.transient else 'permanent'}): {exc.message}",
            file=sys.stderr,
        )
        return 1
    finally:
        await services.close()
    print(f"{result.status} via {result.provider}: id={message.id}")
    if result.status == "captured":
        print(
            "(captured in this process only: nothing left this machine, and a running service's "
            "inbox does not show it; add --server URL to send through that service)\n\n"
            f"{message.subject or ''}\n{message.text}"
        )
    return 0


async def _send_through(server: str, channel: Channel, request: SendRequest) -> int:
    """POST the request to a running service, as Logto would; its inbox shows what it captures."""
    base = server.rstrip("/")
    token = os.environ.get("OTP_SERVICE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"to": request.to, "type": request.type, "payload": dict(request.payload)}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.post(f"{base}/v1/{channel}", json=body, headers=headers) as response,
        ):
            status, answer = response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"FAILED: cannot reach {base}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    if status >= 400 or not isinstance(answer, dict) or "id" not in answer:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        print(f"FAILED ({status} {error.get('code', '')}): {error.get('message', answer)}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{answer['status']} via {answer.get('provider', 'the outbox')}: id={answer['id']}")
    if answer["status"] == "captured":
        print(f"read it at {base}/inbox or GET {base}/v1/messages/{answer['id']}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    request = SendRequest(to=args.to, type=args.type, payload=_payload(args))
    if args.server:
        return asyncio.run(_send_through(args.server, args.channel, request))
    config = _load(args.config)
    return asyncio.run(_send_one(config, args.channel, request))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    print(f"{args.file}: OK")
    print(
        f"  email: {config.email.provider}"
        + (f" ({config.email.smtp.target})" if config.email.smtp else "")
    )
    print(f"  sms:   {config.sms.provider}")
    print(f"  auth:  {len(config.auth.tokens)} token(s)")
    store = config.store
    if store.url:
        print(f"  store: postgresql {store.shown} (schema {store.schema}, pool {store.pool_size})")
    else:
        print(f"  store: sqlite {store.path}")
    return _check_logto(config) if args.online else 0


async def _read_logto(logto: LogtoConfig) -> tuple[list[LogtoTemplate], list[str]]:
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
        rows, unusable = asyncio.run(_read_logto(logto))
    except LogtoApiError as exc:
        print(f"  logto: FAILED: {exc.message}", file=sys.stderr)
        return 1
    broken = unusable + build_library(config).use_logto(rows)
    print(f"  logto: {logto.endpoint}: credentials accepted, {len(rows)} email template(s)")
    for tag, count in sorted(Counter(row.language_tag for row in rows).items()):
        types = sorted(row.template_type for row in rows if row.language_tag == tag)
        print(f"    {tag}: {count} ({', '.join(types)})")
    for problem in broken:
        print(f"    does not compile (other templates will be used): {problem}", file=sys.stderr)
    return 1 if broken else 0


async def _migrate(config: Config) -> list[int]:
    from .store.postgres import PostgresStore

    assert config.store.url is not None
    return await PostgresStore(config.store.url, schema=config.store.schema).migrate_only()


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otp-service", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", help="YAML or JSON config file (default: embedded defaults)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8787)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen on a non-loopback address without auth.tokens")  # fmt: skip
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the port (needs store.url: PostgreSQL)")  # fmt: skip
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    def message_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--channel", choices=("email", "sms"), required=True)
        p.add_argument("--type", default="SignIn", help="usage type (default SignIn)")
        p.add_argument("--code", help="the one-time code")
        p.add_argument("--link", help="a link (organization invitations)")
        p.add_argument("--locale", help="language tag, e.g. fr-CA")
        p.add_argument("--payload", help="extra payload as a JSON object")
        p.add_argument("--config", help="YAML or JSON config file")

    render = sub.add_parser("render", help="print what would be sent")
    message_args(render)
    render.add_argument("--no-html", action="store_true", help="omit the HTML part")
    render.set_defaults(func=cmd_render)

    send = sub.add_parser("send", help="send one real message, like Logto's test button")
    message_args(send)
    send.add_argument("--to", required=True, help="email address or phone number")
    send.add_argument("--server", metavar="URL",
                      help="send through the service running at URL (its inbox shows the "
                      "message); the token comes from $OTP_SERVICE_TOKEN")  # fmt: skip
    send.set_defaults(func=cmd_send)

    check = sub.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("file")
    check.add_argument(
        "--online", action="store_true", help="also read the email templates kept in Logto"
    )
    check.set_defaults(func=cmd_check_config)

    migrate = sub.add_parser("migrate", help="apply the PostgreSQL schema migrations and exit")
    migrate.add_argument("--config", help="YAML or JSON config file with store.url")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    except OtpServiceError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
