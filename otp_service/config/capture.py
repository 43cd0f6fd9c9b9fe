"""The capture section: the inbox's size and the optional SMTP intake."""

from __future__ import annotations

import re

from .fields import Declared, Fields, read_optional, section, setting


@section
class CaptureSmtpConfig:
    """The SMTP intake: an SMTP listener whose mail is captured into the inbox."""

    host: str = setting("address the SMTP intake listens on", default="127.0.0.1")
    port: int = setting("its port (0: any free port)", default=1025, minimum=0, maximum=65535)
    max_connections: int = setting(
        "SMTP clients connected at once; beyond, 421 and closed", default=64, minimum=1
    )
    idle_seconds: float = setting(
        "a client silent this long (or a DATA not finished within it) is disconnected",
        default=30.0, minimum=0.1,
    )  # fmt: skip
    max_message_bytes: int = setting(
        "the largest mail; past it the DATA is refused (552) as it streams, and disconnected",
        default=10 * 1024 * 1024, minimum=1024,
    )  # fmt: skip
    max_buffered_bytes: int = setting(
        "the bytes of DATA held across every client at once; past it 452, and disconnected",
        default=32 * 1024 * 1024, minimum=1024,
    )  # fmt: skip
    max_recipients: int = setting(
        "envelope recipients of one message (each is captured once); past it 452 4.5.3 and "
        "the session goes on (the client sends the rest in another message)",
        default=100, minimum=1,
    )  # fmt: skip


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
    max_waiting: int = setting(
        "latest?wait= requests and event streams open at once (at most half of "
        "server.max_connections); beyond, 503 too_many_waiting",
        default=256, minimum=1,
    )  # fmt: skip
    max_waiting_per_client: int = setting(
        "the same, per token (or per client address without one); beyond, 429 too_many_waiting",
        default=16, minimum=1,
    )  # fmt: skip
    stream_buffer_bytes: int = setting(
        "what one event-stream reader may fall behind by; a reader that does not read is "
        "dropped past it",
        default=1024 * 1024, minimum=64 * 1024,
    )  # fmt: skip
    api: bool = setting(
        "serve the inbox routes (list, latest, events, deletes, /inbox) even when nothing is "
        "captured: a staging setup that delivers for real (default: only when something is)",
        default=False,
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
