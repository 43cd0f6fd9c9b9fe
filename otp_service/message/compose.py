"""From a Logto HTTP connector request to a :class:`Message`, once, early.

The request shape is Logto's (``{to, type, payload: {code, link, locale, ...}, ip}``, see
docs/logto-contract.md); extra keys are accepted, ``Test`` is rendered as ``Generic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..config.sms import SmsConfig
from ..errors import RequestError
from ..text.addresses import normalize_email
from ..text.ids import new_message_id
from ..text.sanitize import has_control
from ..text.segments import analyse
from .recipients import check_destination, e164, parse_phone
from .templates import TemplateLibrary

Channel = Literal["email", "sms"]
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_LINK = re.compile(r"^https?://[^\s]+$", re.IGNORECASE)


@dataclass(frozen=True)
class SendRequest:
    """A validated connector request (the recipient not yet normalised)."""

    to: str
    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    ip: str | None = None
    ttl: float | None = None  # seconds; the caller may shorten the configured lifetime
    source: str | None = None  # the hook that asked (supabase, ...); None: Logto's contract


@dataclass(frozen=True)
class Message:
    """What a provider delivers: rendered, addressed, and nothing else."""

    id: str
    channel: Channel
    to: str
    type: str
    locale: str
    text: str
    subject: str | None = None
    html: str | None = None
    code: str | None = field(default=None, repr=False)
    link: str | None = None
    reply_to: str | None = None
    send_from: str | None = None
    ip: str | None = None
    raw_to: str | None = None  # the number as the user typed it (Aliyun's region check)
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)  # Aliyun TemplateParam
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # SMTP intake: as received
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str | None = None  # the HTTP request that accepted it, for the logs
    source: str | None = None  # the system that asked for it (SendRequest.source)


def parse_request(data: Any) -> SendRequest:
    """Check the shape of a decoded JSON body; 400 with a precise code when it is wrong."""
    if not isinstance(data, dict):
        raise RequestError("invalid_request", "the body must be a JSON object")
    for key in ("to", "type"):
        if key not in data or data[key] in (None, ""):
            raise RequestError("missing_field", f"'{key}' is required")
        if not isinstance(data[key], str):
            raise RequestError("invalid_request", f"'{key}' must be a string")
    usage = data["type"]
    if has_control(usage):
        raise RequestError("invalid_header_value", "'type' contains control characters")
    if not _TYPE.match(usage):
        raise RequestError("invalid_type", "'type' must be a usage type such as SignIn")
    payload = data.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise RequestError("invalid_request", "'payload' must be an object")
    code = payload.get("code")
    # A JSON integer may stand for a code (Logto sends strings); true/false may not, nor a JSON
    # number with a fraction or an exponent (12.5, 1e6, 482913.0): a code is digits, and a float
    # is not (it renders as "12.5" or "1e+21", loses digits past 2**53 and any leading zero).
    if code is not None and (isinstance(code, bool) or not isinstance(code, str | int)):
        raise RequestError("invalid_request", "'payload.code' must be a string or an integer")
    for key in ("link", "locale", "uiLocales"):
        value = payload.get(key)
        if value is not None and not isinstance(value, str):
            raise RequestError("invalid_request", f"'payload.{key}' must be a string")
    link = payload.get("link")
    if link and not _LINK.match(link):
        # Templates put the link in an href: javascript:, data: ... would run in the mail or
        # the inbox page. Only http(s) links are rendered; another is left out of the message.
        payload = {k: v for k, v in payload.items() if k != "link"}
    ip = data.get("ip")
    if ip is not None and not isinstance(ip, str):
        raise RequestError("invalid_request", "'ip' must be a string")
    ttl = data.get("ttl")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise RequestError("invalid_request", "'ttl' must be a positive number of seconds")
    return SendRequest(to=data["to"], type=usage, payload=payload, ip=ip, ttl=ttl)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _to(value: str) -> None:
    if has_control(value):  # a header injection attempt, whatever the channel
        raise RequestError("invalid_header_value", "'to' contains control characters")


def normalize_to(value: str, default_region: str | None = None) -> str:
    """An address (``@``) or a phone number as the outbox and the inbox keep it; the same
    error codes as a send."""
    _to(value)
    if "@" in value:
        try:
            return normalize_email(value)
        except ValueError as exc:
            raise RequestError("invalid_email", str(exc)) from None
    try:
        return e164(parse_phone(value, default_region))
    except ValueError as exc:
        raise RequestError("invalid_phone", str(exc)) from None


class Composer:
    """Renders requests into messages with the configured templates."""

    def __init__(self, library: TemplateLibrary, sms: SmsConfig | None = None) -> None:
        self.library = library
        self.sms = sms or SmsConfig()

    def compose(
        self, channel: Channel, request: SendRequest, request_id: str | None = None
    ) -> Message:
        """Validate the recipient, render the templates, and build the message (``request_id``:
        the HTTP request's, kept with the message for the logs of its retries)."""
        payload = request.payload
        message_id = new_message_id()
        code, link = _text(payload.get("code")), _text(payload.get("link"))
        _to(request.to)
        if channel == "email":
            try:
                to = normalize_email(request.to)
            except ValueError as exc:
                raise RequestError("invalid_email", str(exc)) from None
            email = self.library.render_email(request.type, payload)
            return Message(
                id=message_id,
                channel="email",
                to=to,
                type=request.type,
                locale=email.locale,
                subject=email.subject,
                text=email.text,
                html=email.html,
                code=code,
                link=link,
                reply_to=email.reply_to,
                send_from=email.send_from,
                ip=request.ip,
                source=request.source,
                request_id=request_id,
            )
        try:
            parsed = parse_phone(request.to, self.sms.default_region)  # parsed once, used twice
        except ValueError as exc:
            raise RequestError("invalid_phone", str(exc)) from None
        try:
            check_destination(parsed, self.sms)
        except ValueError as exc:
            raise RequestError("destination_not_allowed", str(exc), 403) from None
        number = e164(parsed)
        sms = self.library.render_sms(request.type, payload)
        encoding = analyse(sms.text)
        if encoding.segments > self.sms.max_segments:
            raise RequestError(
                "sms_too_long",
                f"the SMS text is too long: it needs {encoding.segments} segments "
                f"({encoding.encoding}), at most {self.sms.max_segments} are allowed",
                422,
            )
        return Message(
            id=message_id,
            channel="sms",
            to=number,
            type=request.type,
            locale=sms.locale,
            text=sms.text,
            code=code,
            link=link,
            ip=request.ip,
            raw_to=request.to,
            params={k: v for k, v in payload.items() if k != "locale"},
            source=request.source,
            request_id=request_id,
        )
