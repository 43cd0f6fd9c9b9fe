"""The start banner: what to paste into Logto, where captured messages are, and warnings."""

from __future__ import annotations

import socket

from .. import __version__, logs
from ..config import Config, is_loopback
from ..config.checks import warnings
from ..intake.registry import configured


def reachable_base(host: str, port: int) -> str:
    """The base URL to give Logto: never a wildcard address, which nobody can connect to."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a comparison, not a bind)
        host = socket.gethostname() or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def banner(config: Config, base: str, port: int, smtp_port: int | None = None) -> str:
    """The banner ``serve`` prints once it listens."""
    host = config.server.host
    if config.auth.tokens:
        shown = logs.mask_token(config.auth.tokens[0])
        authorization = f"    Authorization Header: Bearer <auth.tokens[0]: {shown}>"
    else:
        authorization = "    Authorization Header: (leave empty: no tokens configured)"
    lines = [
        f"otp-service {__version__} listening on {host}:{port}",
        "",
        "Logto > Connectors > HTTP Email:",
        f"    Endpoint:             {base}/v1/email",
        authorization,
        "Logto > Connectors > HTTP SMS:",
        f"    Endpoint:             {base}/v1/sms",
        authorization,
    ]
    if not is_loopback(host):
        lines += [
            f"    (or, for Logto on this machine: http://127.0.0.1:{port};",
            f"     Logto in Docker on this machine: http://host.docker.internal:{port};",
            f"     Logto on a shared Docker network: http://<this service's name>:{port})",
        ]
    if hooks := configured(config.intakes):  # docs/intakes.md says what to set in each
        lines += ["", "Other identity systems' hooks (see docs/intakes.md):"]
        lines += [
            f"    {f'{hook.name} {channel}:'.ljust(22)}{base}/v1/hooks/{hook.name}/{channel}"
            for hook in hooks
            for channel in hook.channels
        ]
    capture = config.captured_channels()
    if capture or smtp_port is not None:
        asks = " (asks once for one of auth.tokens)" if config.auth.tokens else ""
        lines += [
            "",
            f"Captured {' and '.join(capture) or 'SMTP intake'} messages (not sent anywhere):",
            f"    browser: {base}/inbox{asks}",
            f"    JSON:    {base}/v1/messages/latest?to=...&wait=30",
        ]
        if smtp_port is not None:
            assert config.capture.smtp is not None
            lines.append(
                f"    SMTP:    {config.capture.smtp.host}:{smtp_port} (mail sent here is captured)"
            )
    if config.captures_everything:
        on = [what for what, yes in (("abuse limits", config.limits_on),
                                     ("dedupe", config.dedupe_on)) if yes]  # fmt: skip
        lines.append(
            f"    capture mode for tests: {', '.join(on)} on (as configured)"
            if on
            else "    capture mode for tests: abuse limits and dedupe off "
            "(limits.enabled / delivery.dedupe turn them on)"
        )
    if config.server.metrics_port is not None:
        lines.append(f"Metrics without a token on port {config.server.metrics_port}: /metrics")
    for problem in warnings(config):
        lines.append(f"WARNING {problem.path}: {problem.problem}\n    fix: {problem.fix}")
    return "\n".join(lines)
