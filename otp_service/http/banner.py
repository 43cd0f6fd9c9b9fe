"""What ``otp-service serve`` prints at start: where to point Logto's HTTP connectors, the
token to paste (hidden unless on a terminal), where captured messages can be read."""

from __future__ import annotations

import sys

from ..config import Config


def banner(config: Config, base: str, smtp_port: int | None = None) -> str:
    """The start-up banner for a service listening on ``base``."""
    lines = [
        f"otp-service listening on {base}",
        "",
        "Logto > Connectors > HTTP Email:",
        f"    Endpoint:             {base}/v1/email",
        "Logto > Connectors > HTTP SMS:",
        f"    Endpoint:             {base}/v1/sms",
    ]
    if config.auth.tokens:
        token = config.auth.tokens[0]
        shown = (
            token
            if sys.stdout.isatty()
            else f"{token[:4]}… (auth.tokens[0], hidden: not a terminal)"
        )
        lines.append(f"    Authorization Header: Bearer {shown}")
    else:
        lines.append("    Authorization Header: (leave empty: no tokens configured)")
    capture = [
        ch
        for ch, p in (("email", config.email.provider), ("sms", config.sms.provider))
        if p == "capture"
    ]
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
    return "\n".join(lines)
