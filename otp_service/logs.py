"""Logging: one line per event, readable text or JSON, each tied to the request that caused it.

Events are ordinary :mod:`logging` records whose message is the event's name and whose fields
ride in ``extra``; :class:`TextFormatter` writes ``time LEVEL logger event key=value ...`` and
:class:`JsonFormatter` one JSON object a line. The request id of the HTTP request being served
(or of the message being delivered) lives in a context variable, so every line carries it,
including the lines of a delivery task the request started. Recipients are masked before they
reach a record (:func:`mask_recipient`); codes, tokens and secrets are never given to one.

Other libraries' loggers are not so careful (aiosmtpd logs every ``RCPT`` address at INFO and
each DATA line, the code among them, at DEBUG), so :class:`ForeignRecordFilter` stands on the
handler and rewrites every record that is not ours, at every level: the arguments a library
formats into its message are hidden unless they are numbers or IP addresses, and any address
or phone number left in the text (or in a traceback) is masked.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import IO, Any

from aiohttp.http_exceptions import HttpProcessingError

from .text.sanitize import mask_email, mask_phone

request_id: ContextVar[str | None] = ContextVar("otp_request_id", default=None)

_FIELDS = "otp_fields"
_PLAIN = re.compile(r"^[\w.:@+*/\-]+$")  # text values that need no quotes
# LogRecord attributes of the standard library; anything else in a record is an extra.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", _FIELDS}


_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+\d(?:[\d .()-]{5,}\d)")


def mask_recipient(to: str) -> str:
    """``a***@example.com`` for an address, ``+86***0000`` for a number."""
    return mask_email(to) if "@" in to else mask_phone(to)


def mask_token(token: str) -> str:
    """A token as logs and banners may show it: its first 4 characters and its length."""
    return f"{token[:4]}… ({len(token)} characters)" if len(token) > 8 else "***"


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log event ``name`` with ``fields`` (and the current request id) as one line."""
    if logger.isEnabledFor(level):
        rid = fields.pop("request_id", None) or request_id.get()
        logger.log(level, name, extra={_FIELDS: {"request_id": rid, **fields}})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = dict(getattr(record, _FIELDS, None) or {})
    if "request_id" not in found and (rid := request_id.get()) is not None:
        found["request_id"] = rid
    for key, value in record.__dict__.items():  # extras of records not made by event()
        if key not in _STANDARD and not key.startswith("_"):
            found.setdefault(key, value)
    return {k: v for k, v in found.items() if v is not None}


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    text = str(value)
    return text if _PLAIN.match(text) else json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-27T13:30:00.123Z WARNING otp_service.outbox expired id=... attempts=7``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            record.levelname,
            record.name,
            record.getMessage(),
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``event``, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class BadRequestFilter(logging.Filter):
    """aiohttp logs a malformed HTTP request at ERROR with a traceback that quotes the bad
    bytes (an ``Authorization`` line among them): keep one INFO line without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.exc_info = record.exc_text = None
            record.msg, record.args = "bad HTTP request refused", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            setattr(record, _FIELDS, {"status": error.code})
        return True


class _Hidden:
    """What a foreign record shows in place of an argument that may carry personal data."""

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


_HIDDEN = _Hidden()


def _shown(value: Any) -> Any:
    """``value`` when it cannot carry an address or a code (a number, an IP address, a peer
    tuple of those), else :data:`_HIDDEN`."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return _HIDDEN
        return value
    if isinstance(value, tuple) and len(value) <= 4:  # a socket peer: (host, port, ...)
        return tuple(_shown(item) for item in value)
    return _HIDDEN


def mask_text(text: str) -> str:
    """``text`` with every email address and phone number in it masked."""
    text = _EMAIL.sub(lambda m: mask_email(m.group()), text)
    return _PHONE.sub(lambda m: mask_phone(re.sub(r"[^\d+]", "", m.group())), text)


class ForeignRecordFilter(logging.Filter):
    """Our masking for every logger that is not ours (records not made by :func:`event` outside
    ``otp_service``): a library's format string is kept, its arguments are hidden unless
    harmless (:func:`_shown`), and addresses and numbers left in the text are masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, _FIELDS) or record.name.partition(".")[0] == "otp_service":
            return True
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: _shown(value) for key, value in args.items()}
        elif args:
            record.args = tuple(_shown(value) for value in args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a hidden value under %d: the format string alone
            message = str(record.msg)
        record.msg, record.args = mask_text(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
        return True


# Loggers of libraries that write a line per protocol step at INFO: aiosmtpd's (each command
# of each client of the SMTP intake, its connections, sender and recipients).
CHATTY_LIBRARIES = ("mail.log",)


def setup(
    log_format: str | None = None, level: str = "INFO", stream: IO[str] | None = None
) -> None:
    """Send every log record to ``stream`` (stderr) as ``text`` or ``json``.

    Without a format: text when the stream is a terminal, JSON otherwise (a container's log
    pipeline). Replaces handlers a previous call installed.
    """
    stream = stream or sys.stderr
    if log_format is None:
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(BadRequestFilter())
    handler.addFilter(ForeignRecordFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # A library that logs every protocol line at INFO speaks only of its warnings unless the
    # service logs at DEBUG: one SMTP client's command flood is then not a flood of log lines.
    for name in CHATTY_LIBRARIES:
        chatty = logging.getLogger(name)
        chatty.setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
