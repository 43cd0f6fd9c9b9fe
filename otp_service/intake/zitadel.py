"""The ZITADEL intake: ZITADEL's HTTP SMS provider and HTTP email provider (docs/intakes.md).

A pure translator: :func:`verify_signature` checks the ``ZITADEL-Signature`` header against the
raw body, :func:`translate` turns the decoded body into the send path's input
(:class:`ZitadelHook` wires them into :mod:`.hook`'s contract). They raise
:class:`~otp_service.errors.RequestError` with a stable code; none does I/O.

The wire contract, as read from ZITADEL's source (``internal/notification/types/user_email.go``
and ``user_phone.go``, ``channels/webhook/channel.go``, ``pkg/actions/signing.go``)::

    POST <endpoint>   Content-Type: application/json
    ZITADEL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>
    {"contextInfo": {"eventType", "provider": {"id", "description"},
                     "recipientEmailAddress" | "recipientPhoneNumber"},
     "templateData": {"title", "preHeader", "subject", "greeting", "text", "url", "buttonText",
                      "primaryColor", "backgroundColor", "fontColor", "logoUrl", "fontUrl",
                      "fontFaceFamily", "fontFamily", "includeFooter", "footerText"},
     "args": {"code", "oTP", "userID", "displayName", "preferredLoginName", ...}}

The signing key is used as its UTF-8 bytes (not decoded). ZITADEL sends no request id and
retries a failed delivery with the same code, so a retry is recognised by its recipient, event
type and code or, for a notice without a code, by its body (:meth:`.hook.Translated.replay_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..config.zitadel import ZitadelIntakeConfig
from ..errors import RequestError
from ..text.sanitize import has_control
from .doc import OBJ, STR, HookDoc, obj
from .hook import Delivery, Hook, Inbound, Translated, obj_field, text_field

Channel = Literal["email", "sms"]
MESSAGE = "Message"  # the usage type whose templates send a text as is (``message``, ``subject``)
SIGNATURE_HEADER = "ZITADEL-Signature"
TOLERANCE_SECONDS = 300  # ZITADEL's own DefaultTolerance; we also refuse a future timestamp
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_LINK = re.compile(r"^https?://\S+$", re.IGNORECASE)
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")

# contextInfo.eventType -> usage type. The names are ZITADEL's event types (internal/repository
# /user and /session), both the current "user.human." ones and the v1 "user." ones it still
# reduces; the usage types are Logto's where the meaning is the same.
EVENT_TYPES: Mapping[str, str] = {
    "user.human.initialization.code.added": "Register",
    "user.initialization.code.added": "Register",
    "user.human.invite.code.added": "Invite",
    "user.human.email.code.added": "BindNewIdentifier",
    "user.email.code.added": "BindNewIdentifier",
    "user.human.phone.code.added": "BindNewIdentifier",
    "user.phone.code.added": "BindNewIdentifier",
    "user.human.password.code.added": "ForgotPassword",
    "user.password.code.added": "ForgotPassword",
    "user.human.mfa.otp.sms.code.added": "MfaVerification",
    "user.human.mfa.otp.email.code.added": "MfaVerification",
    "session.otp.sms.challenged": "MfaVerification",
    "session.otp.email.challenged": "MfaVerification",
    # Notices and links with no template of ours: ZITADEL's own text (in the user's language).
    "user.human.passwordless.initialization.code.requested": MESSAGE,
    "user.human.password.changed": MESSAGE,
    "user.domain.claimed": MESSAGE,
}
"""Every event ZITADEL's user notifier sends a message for. An event type not listed here is
sent as ``Generic`` when it carries a code (ZITADEL adds notification events in minor releases,
e.g. the invite code, without versioning its webhook), and refused when it does not."""

# templateData keys, as ZITADEL's json tags spell them (older releases had no tags and sent
# Title, Text ...: matched without regard to case).
TEMPLATE_KEYS = (
    "title", "preHeader", "subject", "greeting", "text", "url", "buttonText", "primaryColor",
    "backgroundColor", "fontColor", "logoUrl", "fontUrl", "fontFaceFamily", "fontFamily",
    "includeFooter", "footerText",
)  # fmt: skip
_TEMPLATE_KEYS = {key.lower(): key for key in TEMPLATE_KEYS}


def _unauthorized(code: str, message: str) -> RequestError:
    return RequestError(code, message, 401)


def _parse_header(header: str) -> tuple[int, list[bytes]]:
    """``t`` and the ``v1`` signatures, as ZITADEL's parseSignatureHeader reads them: each
    comma-separated part must be ``key=value``; other keys are ignored, non-hex ``v1`` skipped."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or "=" in value:
            raise _unauthorized("invalid_signature", "the ZITADEL-Signature header is malformed")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise _unauthorized(
                    "invalid_signature", "the ZITADEL-Signature timestamp is not a number"
                )
            timestamp = int(value)
        elif key == "v1" and _HEX.match(value):
            signatures.append(bytes.fromhex(value))
    if timestamp is None:
        raise _unauthorized("invalid_signature", "the ZITADEL-Signature header has no timestamp")
    if not signatures:
        raise _unauthorized("invalid_signature", "the ZITADEL-Signature header has no signature")
    return timestamp, signatures


def sign(body: bytes, key: str, timestamp: int) -> str:
    """The ``v1`` signature ZITADEL computes (hex), for tests and the docs' curl."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(header: str | None, body: bytes, keys: Sequence[str], now: float) -> None:
    """Raise 401 unless ``header`` signs ``body`` with one of ``keys`` within ±5 minutes of
    ``now``: ``missing_signature``, ``invalid_signature`` or ``stale_signature``.

    Every key is compared with every signature, in constant time, whatever matched first."""
    if not header:
        raise _unauthorized("missing_signature", "the ZITADEL-Signature header is missing")
    timestamp, signatures = _parse_header(header)
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise _unauthorized(
            "stale_signature",
            "the ZITADEL-Signature timestamp is more than 5 minutes away from our clock",
        )
    message = str(timestamp).encode() + b"." + body
    expected = [hmac.new(k.encode(), message, hashlib.sha256).digest() for k in keys]
    matches = [hmac.compare_digest(e, s) for e in expected for s in signatures]
    if not any(matches):
        raise _unauthorized("invalid_signature", "the ZITADEL-Signature does not match the body")


def template_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """ZITADEL's ``templateData`` pieces with their current names (any case accepted), strings
    and ``includeFooter`` only."""
    pieces: dict[str, Any] = {}
    for key, value in obj_field(data, "templateData").items():
        name = _TEMPLATE_KEYS.get(str(key).lower())
        if name is None:
            continue
        if name == "includeFooter":
            pieces[name] = value is True
        elif isinstance(value, str):
            pieces[name] = value
    return pieces


def _code(args: Mapping[str, Any]) -> str | None:
    for key in ("code", "oTP", "OTP", "otp"):
        value = args.get(key)
        if value in (None, ""):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise RequestError("invalid_request", f"'args.{key}' must be a string")
        code = str(value)
        if len(code) > 64 or has_control(code):
            raise RequestError("invalid_request", f"'args.{key}' is not a one-time code")
        return code
    return None


def _user(args: Mapping[str, Any]) -> dict[str, Any]:
    """The user as templates know Logto's (``user.name`` greets them)."""

    def text(*keys: str) -> str:
        for key in keys:
            if isinstance(value := args.get(key), str) and value.strip():
                return value.strip()
        return ""

    first_last = " ".join(p for p in (text("firstName"), text("lastName")) if p)
    return {
        "id": text("userID"),
        "name": text("displayName") or first_last or text("preferredLoginName"),
        "username": text("userName", "preferredLoginName"),
        "primaryEmail": text("verifiedEmail", "lastEmail"),
        "primaryPhone": text("verifiedPhone", "lastPhone"),
    }


def _locale(args: Mapping[str, Any]) -> str | None:
    """The user's language, when ZITADEL names it. Its webhook args carry no language today
    (``mapNotifyUserToArgs``); ``preferredLanguage`` is what its arg naming would give."""
    value = args.get("preferredLanguage")
    if isinstance(value, str) and _LOCALE.match(value) and value.lower() != "und":
        return value
    return None


def translate(channel: Channel, data: Any, *, relay_sms_text: bool = True) -> Translated:
    """The decoded body of a ZITADEL request on ``channel`` as the send path's input.

    400 when the body is not ZITADEL's shape (``missing_field``, ``invalid_request``), 422
    ``unknown_event_type`` for an event type we do not know that carries no code."""
    if not isinstance(data, Mapping):
        raise RequestError("invalid_request", "the body must be a JSON object")
    context = obj_field(data, "contextInfo")
    args = obj_field(data, "args")
    pieces = template_data(data)
    field_name = "recipientEmailAddress" if channel == "email" else "recipientPhoneNumber"
    to = text_field(context, field_name, "contextInfo.")
    if to is None:
        raise RequestError("missing_field", f"'contextInfo.{field_name}' is required")
    event_type = text_field(context, "eventType", "contextInfo.")
    if event_type is None:
        raise RequestError("missing_field", "'contextInfo.eventType' is required")
    code = _code(args)
    usage = EVENT_TYPES.get(event_type)
    if usage is None:
        if code is None:
            raise RequestError(
                "unknown_event_type",
                f"ZITADEL event type {event_type[:100]!r} is not one otp-service knows "
                "and carries no code",
                422,
            )
        usage = "Generic"
    payload: dict[str, Any] = {"user": _user(args), "zitadel": {**pieces, "eventType": event_type}}
    if code is not None:
        payload["code"] = code
    if (url := pieces.get("url")) and _LINK.match(url):
        payload["link"] = url
    if (locale := _locale(args)) is not None:
        payload["locale"] = locale
    if logo := pieces.get("logoUrl"):  # ZITADEL's label policy logo: the email's logo
        payload["application"] = {"branding": {"logoUrl": logo}}
    if (ttl := _expiry(args)) is not None:
        payload["ttl_minutes"] = max(1, round(ttl / 60))
    rendered = pieces.get("text", "").strip()
    if usage == MESSAGE or (channel == "sms" and relay_sms_text and rendered):
        if not rendered:
            raise RequestError("missing_field", "'templateData.text' is required for this event")
        url = payload.get("link")
        if channel == "email" and url and url not in rendered:
            rendered = f"{rendered}\n\n{url}"
        payload["message"] = rendered
        if channel == "email":
            payload["subject"] = pieces.get("subject") or pieces.get("title") or None
        usage = MESSAGE
    return Translated(channel, to, usage, payload, ttl, kind=event_type)


def _expiry(args: Mapping[str, Any]) -> float | None:
    """The code's lifetime in seconds: ``args.expiry``, a Go duration (nanoseconds)."""
    value = args.get("expiry")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1e9
    return seconds if 1 <= seconds <= 86400 else None


class ZitadelHook(Hook):
    """``POST /v1/hooks/zitadel/{email,sms}``: ZITADEL's HTTP providers. Any 2xx is "sent" to
    ZITADEL and anything else is retried, so the house answers suit it; a retry is recognised by
    :meth:`.hook.Translated.replay_key`."""

    name = "zitadel"
    wait_seconds = 4.0  # ZITADEL gives up on a provider after 5 s, then retries
    doc = HookDoc(
        "ZITADEL's HTTP email / HTTP SMS provider (docs/intakes.md)",
        {
            channel: obj(
                ["contextInfo"],
                contextInfo=obj(
                    ["eventType"],
                    eventType=STR,
                    recipientEmailAddress=STR,
                    recipientPhoneNumber=STR,
                    provider=OBJ,
                ),
                templateData=OBJ,
                args=OBJ,
            )
            for channel in ("email", "sms")
        },
        {
            "zitadel_signature": {
                "type": "apiKey",
                "in": "header",
                "name": "ZITADEL-Signature",
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256> over the body, with a "
                "key of intakes.zitadel.signing_keys",
            }
        },
    )

    def __init__(self, config: ZitadelIntakeConfig) -> None:
        self.keys = config.signing_keys
        self.relay_sms_text = config.sms_text == "zitadel"

    def verify(self, inbound: Inbound, now: float) -> None:
        verify_signature(inbound.headers.get(SIGNATURE_HEADER), inbound.body, self.keys, now)

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        got = translate(channel, data, relay_sms_text=self.relay_sms_text)
        return [got.delivery(self.name, inbound.body)]
