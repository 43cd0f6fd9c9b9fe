"""The ``otp-service`` command: serve, send, render, latest, check-config, config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__, logs
from .admin.commands import check_config, migrate, read_logto
from .config import DEFAULT_PORT, Config, load_config
from .config.checks import refusals, warnings
from .errors import (
    ConfigError,
    ConfigProblem,
    LogtoApiError,
    OtpServiceError,
    OutcomeUnknownError,
    ProviderError,
    TemplateRenderError,
)
from .http.access_log import AccessLogger
from .http.app import SERVICES, create_app
from .http.banner import banner, reachable_base
from .http.connections import listen
from .http.inbox_api import MAX_WAIT_SECONDS
from .http.ops import create_metrics_app
from .message.compose import Channel, SendRequest
from .message.templates import TemplateLibrary
from .services import build_library, build_services
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
    # ... and renders each with a sample payload: one that fails is one too.
    if problems := library.render_problems() or _check_sms_length(config, library):
        raise ConfigError(problems)
    return config


def _print_problems(error: ConfigError) -> None:
    print(f"configuration has {len(error.problems)} problem(s):", file=sys.stderr)
    for problem in error.problems:
        print(f"  - {problem.path}: {problem.problem}\n      fix: {problem.fix}", file=sys.stderr)


def _inherited(fd: int | None) -> socket.socket | None:
    """A listening socket bound by the supervisor (``--metrics-fd``, ``--intake-fd``)."""
    return None if fd is None else socket.socket(fileno=fd)


async def _serve(
    config: Config,
    access_log: bool,
    worker: bool = False,
    metrics_fd: int | None = None,
    intake_fd: int | None = None,
) -> None:
    app = create_app(config)
    if (intake := app[SERVICES].intake) is not None:
        intake.sock = _inherited(intake_fd)
    grace = config.delivery.shutdown_grace_seconds
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("otp_service.access") if access_log else None,
        access_log_class=AccessLogger,
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
        reserved=config.capture.smtp.max_connections if config.capture.smtp else 0,
    )
    port, guard = listener.port, listener.guard
    runners = [runner]
    if (metrics_port := config.server.metrics_port) is not None:
        scraper = web.AppRunner(create_metrics_app(app[SERVICES]), access_log=None)
        await scraper.setup()
        runners.insert(0, scraper)
        if (shared := _inherited(metrics_fd)) is not None:  # the supervisor's one listener
            await web.SockSite(scraper, shared).start()
        else:
            metrics_host = config.server.metrics_bind_host
            await web.TCPSite(scraper, metrics_host, metrics_port).start()
    for problem in warnings(config):
        logs.event(
            log, logging.WARNING, "config warning", path=problem.path, problem=problem.problem
        )
    intake = app[SERVICES].intake
    smtp_port = intake.port if intake is not None else None
    if not worker:  # the supervisor printed it once for all workers
        print(banner(config, reachable_base(config.server.host, port), port, smtp_port), flush=True)
    if guard.cap < config.server.max_connections:
        log.warning("at most %d connections: ulimit -n is below server.max_connections", guard.cap)
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
        logs.event(
            log, logging.INFO, "shutting down",
            drain_s=config.server.drain_seconds, grace_s=grace,
        )  # fmt: skip
        await asyncio.sleep(config.server.drain_seconds)
        await listener.close()
        for each in runners:
            await each.cleanup()


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    server = replace(
        config.server,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
        allow_unauthenticated=args.allow_unauthenticated or config.server.allow_unauthenticated,
        metrics_port=args.metrics_port
        if args.metrics_port is not None
        else config.server.metrics_port,
    )
    config = replace(config, server=server)
    if problems := refusals(config):
        raise ConfigError(problems)
    if args.workers > 1:
        return _supervise(config, args)
    try:
        asyncio.run(
            _serve(
                config, args.access_log, worker=args.worker,
                metrics_fd=args.metrics_fd, intake_fd=args.intake_fd,
            )
        )  # fmt: skip
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            fix = (
                "stop what holds the port or choose another (--port / server.port, "
                "--metrics-port / server.metrics_port, the SMTP intake's port)"
            )
        else:
            fix = "check the database is reachable" if config.store.url else _STORE_PATH_FIX
        print(
            f"cannot start: {exc}\n  (outbox: {config.store.shown}; listening: "
            f"{server.host}:{server.port})\n  fix: {fix}",
            file=sys.stderr,
        )
        return 1
    except sqlite3.Error as exc:
        print(
            f"cannot start: {exc}\n  (outbox: {config.store.shown})\n  fix: {_STORE_PATH_FIX}",
            file=sys.stderr,
        )
        return 1
    return 0


_STORE_PATH_FIX = "check store.path is writable (and not held by another otp-service)"


def _supervise(config: Config, args: argparse.Namespace) -> int:
    base = reachable_base(config.server.host, config.server.port)
    shown = banner(config, base, config.server.port)
    return supervise(config, args.workers, worker_command(args.argv), shown)


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for key in ("code", "link", "locale"):
        if getattr(args, key, None) is not None:
            payload[key] = getattr(args, key)
    if getattr(args, "payload", None):
        try:
            extra = json.loads(args.payload)
        except ValueError as exc:
            raise OtpServiceError(f"--payload is not valid JSON: {exc}") from None
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
            rows, _ = asyncio.run(read_logto(config.templates.logto))
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
    """Send through the service's own send path, with an outbox of this process in memory: it
    waits ``delivery.wait_seconds`` like a request, and leaves nothing for a running service."""
    config = replace(
        config,
        store=replace(config.store, path=":memory:", url=None),
        capture=replace(config.capture, smtp=None),
    )
    services = build_services(config)
    await services.outbox.start()
    try:
        outcome = await services.sender.send(channel, request)
        captured = await services.inbox.get(outcome.id) if outcome.id else None
    finally:
        await services.outbox.stop(0)
    error = outcome.error
    if outcome.status not in ("sent", "captured"):
        if outcome.status == "refused" and error is not None:
            raise error  # the same stable code the API would give
        kind = outcome.status
        if isinstance(error, ProviderError):
            kind = "unknown" if isinstance(error, OutcomeUnknownError) else (
                "transient" if error.transient else "permanent"
            )  # fmt: skip
        print(f"FAILED ({kind}): {error.message if error else outcome.status}", file=sys.stderr)
        return 1
    print(f"{outcome.status} via {outcome.provider}: id={outcome.id}")
    if captured is not None:
        print(
            "(captured in this process only: nothing left this machine, and a running service's "
            "inbox does not show it; add --server URL to send through that service)\n\n"
            f"{captured.subject or ''}\n{captured.text}"
        )
    return 0


def _authorization() -> dict[str, str]:
    """The header a command talking to a running service sends: $OTP_SERVICE_TOKEN's."""
    token = os.environ.get("OTP_SERVICE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _send_through(server: str, channel: Channel, request: SendRequest) -> int:
    """POST the request to a running service, as Logto would; its inbox shows what it captures."""
    base = server.rstrip("/")
    headers = _authorization()
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
    if args.log_level is None:  # the outcome is the answer; attempts show when they fail
        logging.getLogger("otp_service").setLevel(logging.WARNING)
    return asyncio.run(_send_one(config, args.channel, request))


async def _latest(args: argparse.Namespace) -> int:
    """``latest``: ``GET /v1/messages/latest?wait=`` on a running service; print the code."""
    base = args.server.rstrip("/")
    query = {"to": args.to, "wait": f"{args.wait:g}"}
    for key in ("channel", "type", "since"):
        if getattr(args, key) is not None:
            query[key] = getattr(args, key)
    timeout = aiohttp.ClientTimeout(total=args.wait + 30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(
                f"{base}/v1/messages/latest", params=query, headers=_authorization()
            ) as response,
        ):
            status, answer = response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        print(f"FAILED: cannot reach {base}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and error.get("code") == "message_not_found":
        what = " ".join(f"{key}={query[key]}" for key in ("channel", "type") if key in query)
        print(f"no message{' (' + what + ')' if what else ''} for {args.to} arrived "
              f"within {args.wait:g} s", file=sys.stderr)  # fmt: skip
        return 1
    if status != 200 or not isinstance(answer, dict):
        error = error if isinstance(error, dict) else {}
        print(f"FAILED ({status} {error.get('code', '')}): {error.get('message', answer)}",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return 0
    found = answer.get("code") or answer.get("link")
    if not found:
        print(f"the message {answer.get('id')} has no code or link (--json shows all of it)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(found)
    return 0


def cmd_latest(args: argparse.Namespace) -> int:
    return asyncio.run(_latest(args))


def cmd_check_config(args: argparse.Namespace) -> int:
    return check_config(_load(args.file), args.file, online=args.online)


def cmd_config(args: argparse.Namespace) -> int:
    from .config import schema  # only this command needs it

    if args.what == "schema":
        print(json.dumps(schema.json_schema(), indent=2, ensure_ascii=False))
    else:
        print(schema.reference(), end="")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    return migrate(_load(args.config))


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An option's type: a whole number from ``low`` (to ``high``), refused otherwise."""

    def parse(text: str) -> int:
        span = f"between {low} and {high}" if high is not None else f">= {low}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number {span}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}")  # as the config says it
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= MAX_WAIT_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_WAIT_SECONDS:g}")
    return value


DESCRIPTION = """\
One-time codes for Logto's HTTP email and SMS connectors (and other identity systems' hooks):
serve them, send or render one, read the latest captured code, check a config file or describe
it (its JSON Schema or reference), migrate the PostgreSQL schema.
Run "otp-service COMMAND --help" for a command's options.
"""


def _parser() -> argparse.ArgumentParser:
    def log_args(p: argparse.ArgumentParser, default: Any) -> None:
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        p.add_argument("--log-level", default=default, type=str.upper, choices=levels,
                       help="default INFO")  # fmt: skip
        p.add_argument("--log-format", default=default, choices=("text", "json"),
                       help="default: text on a terminal, json otherwise")  # fmt: skip

    port = _whole(0, 65535)
    parser = argparse.ArgumentParser(
        prog="otp-service", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"otp-service {__version__}",
                        help="print the version and exit")  # fmt: skip
    log_args(parser, None)
    sub = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND",
        help='one of these; "otp-service COMMAND --help" lists its options',
    )  # fmt: skip

    serve = sub.add_parser(
        "serve", help="run the HTTP service", description="Run the HTTP service."
    )
    log_args(serve, argparse.SUPPRESS)  # after the command too: serve --log-format json
    serve.add_argument("--config", help="YAML or JSON config file (default: embedded defaults)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=port, help="port, 0 to 65535 (default 8787; 0: any free)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen on a non-loopback address without auth.tokens")  # fmt: skip
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.add_argument("--metrics-port", type=port,
                       help="also serve /metrics, without a token, on this port")  # fmt: skip
    serve.add_argument("--workers", type=_whole(1), default=1,
                       help="processes sharing the port (needs store.url: PostgreSQL)")  # fmt: skip
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)  # from the supervisor
    serve.add_argument("--intake-fd", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    def message_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--channel", choices=("email", "sms"), required=True,
                       help="which connector's message")  # fmt: skip
        p.add_argument("--type", default="SignIn", help="usage type (default SignIn)")
        p.add_argument("--code", help="the one-time code")
        p.add_argument("--link", help="a link (organization invitations)")
        p.add_argument("--locale", help="language tag, e.g. fr-CA")
        p.add_argument("--payload", help="extra payload as a JSON object")
        p.add_argument("--config", help="YAML or JSON config file")

    render = sub.add_parser("render", help="print what would be sent",
                            description="Print the message a request would send.")  # fmt: skip
    message_args(render)
    render.add_argument("--no-html", action="store_true", help="omit the HTML part")
    render.set_defaults(func=cmd_render)

    send = sub.add_parser("send", help="send one real message, like Logto's test button",
                          description="Send one message, like Logto's test button.")  # fmt: skip
    message_args(send)
    send.add_argument("--to", required=True, help="email address or phone number")
    send.add_argument("--server", metavar="URL",
                      help="send through the service running at URL (its inbox shows the "
                      "message); the token comes from $OTP_SERVICE_TOKEN")  # fmt: skip
    send.set_defaults(func=cmd_send)

    latest = sub.add_parser(
        "latest", help="print the latest captured code for a recipient, waiting for it",
        description="Print the code of the newest captured message for a recipient (GET "
        "/v1/messages/latest on a running service), waiting up to --wait seconds for one to "
        "arrive; exit 1 when none does. The token comes from $OTP_SERVICE_TOKEN.",
    )  # fmt: skip
    latest.add_argument("--to", required=True, help="the recipient: email address or phone number")
    latest.add_argument("--channel", choices=("email", "sms"), help="only this channel's messages")
    latest.add_argument("--type", help="only messages of this usage type, e.g. SignIn")
    latest.add_argument("--since", metavar="TIME|ID",
                        help="only messages captured at or after an RFC 3339 time, or after "
                        "the captured message with this id")  # fmt: skip
    latest.add_argument("--wait", type=_seconds, default=30.0, metavar="SECONDS",
                        help=f"how long to wait for one, 0 to {MAX_WAIT_SECONDS:g} "
                        "(default 30)")  # fmt: skip
    latest.add_argument("--server", metavar="URL", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                        help="the running service (default %(default)s)")  # fmt: skip
    latest.add_argument("--json", action="store_true",
                        help="print the whole message as JSON, not only its code")  # fmt: skip
    latest.set_defaults(func=cmd_latest)

    check = sub.add_parser("check-config", help="validate a config file and print every problem",
                           description="Validate a config file (templates rendered with a "
                           "sample payload) and print every problem.")  # fmt: skip
    check.add_argument("file", help="the YAML or JSON config file")
    check.add_argument(
        "--online", action="store_true", help="also read the email templates kept in Logto"
    )
    check.set_defaults(func=cmd_check_config)

    config = sub.add_parser(
        "config", help="describe the config file: its JSON Schema or reference",
        description="Print the config file's JSON Schema or its reference.",
    )  # fmt: skip
    config.add_argument(
        "what",
        choices=("schema", "docs"),
        help="schema: a JSON Schema for editors; docs: the reference of every setting (Markdown)",
    )
    config.set_defaults(func=cmd_config)

    migrate = sub.add_parser(
        "migrate", help="apply the PostgreSQL schema migrations and exit",
        description="Apply the PostgreSQL schema migrations and exit.",
    )  # fmt: skip
    migrate.add_argument("--config", help="YAML or JSON config file with store.url")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logs.setup(args.log_format, args.log_level or "INFO")
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        _print_problems(exc)
        return 1
    except OtpServiceError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        if isinstance(exc, TemplateRenderError):
            print(f"  {exc.template} ({exc.locale}): {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `otp-service render | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process ended by SIGPIPE
    return code


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
