"""The capture section: the inbox's size and the optional SMTP intake."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import Fields


@dataclass(frozen=True)
class CaptureSmtpConfig:
    """The SMTP intake: an SMTP listener whose mail is captured into the inbox."""

    host: str = "127.0.0.1"
    port: int = 1025


@dataclass(frozen=True)
class CaptureConfig:
    max_messages: int = 1000
    max_bytes: int = 64 * 1024 * 1024  # the inbox's memory; the oldest are dropped past it
    smtp: CaptureSmtpConfig | None = None  # off unless configured


def parse_capture(root: Fields) -> CaptureConfig:
    f = root.obj("capture")
    if f is None:
        return CaptureConfig()
    f.reject_unknown(("max_messages", "max_bytes", "smtp"))
    return CaptureConfig(
        max_messages=f.integer("max_messages", default=1000, minimum=1),
        max_bytes=f.integer("max_bytes", default=64 * 1024 * 1024, minimum=1024 * 1024),
        smtp=_capture_smtp(f),
    )


def _capture_smtp(f: Fields) -> CaptureSmtpConfig | None:
    value = f.data.get("smtp")
    if value is None or value is False:
        return None
    if value is True:
        return CaptureSmtpConfig()
    g = f.obj("smtp")
    if g is None:
        return None
    g.reject_unknown(("host", "port"))
    d = CaptureSmtpConfig()
    return CaptureSmtpConfig(
        host=g.string("host", default=d.host) or d.host,
        port=g.integer("port", default=d.port, minimum=0, maximum=65535),
    )
