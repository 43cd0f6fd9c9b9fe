"""The capture section: the inbox's size and the optional SMTP intake."""

from __future__ import annotations

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
