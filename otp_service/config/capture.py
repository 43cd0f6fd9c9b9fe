"""The capture section: the inbox's size and the optional SMTP intake."""

from __future__ import annotations

import re

from .fields import Declared, Fields, read_optional, section, setting


@section
class CaptureSmtpConfig:
    """The SMTP intake: an SMTP listener whose mail is captured into the inbox."""

    host: str = setting("address the SMTP intake listens on", default="127.0.0.1")
    port: int = setting("its port (0: any free port)", default=1025, minimum=0, maximum=65535)


def _intake(f: Fields, d: Declared) -> CaptureSmtpConfig | None:
    value = f.data.get(d.key)
    if value is None or value is False:
        return None
    return CaptureSmtpConfig() if value is True else read_optional(CaptureSmtpConfig, f, d.key)


def _pattern(f: Fields, d: Declared) -> str | None:
    pattern = f.string(d.key)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            f.problem(d.key, f"is not a regular expression: {exc}", 'e.g. "^\\+1555"')
            return None
    return pattern


@section
class CaptureConfig:
    max_messages: int = setting(
        "captured messages kept; the oldest go first", default=1000, minimum=1
    )
    max_bytes: int = setting(
        "the inbox's size in bytes; the oldest are dropped past it",
        default=64 * 1024 * 1024,
        minimum=1024 * 1024,
    )
    smtp: CaptureSmtpConfig | None = setting(
        "the SMTP intake (mail from any app into the inbox): off unless set; true = its defaults",
        default=None,
        read=_intake,
        schema={"anyOf": [{"type": ["boolean", "null"]}, CaptureSmtpConfig]},
    )
    sms_undelivered: str | None = setting(
        "captured SMS to numbers (E.164) this regular expression finds get a simulated "
        "undelivered receipt; the others a delivered one",
        default=None, read=_pattern, schema={"type": ["string", "null"]},
    )  # fmt: skip
