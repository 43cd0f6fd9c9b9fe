"""The Ory Kratos intake: the courier's HTTP delivery (email) and its ``sms`` channel
(docs/intakes.md).

A pure translator: :func:`check_basic` and :func:`check_api_key` check the credentials Kratos's
``request_config.auth`` sends, :func:`translate` turns the decoded body into the send path's
input (:class:`KratosHook` wires them into :mod:`.hook`'s contract). They raise
:class:`~otp_service.errors.RequestError` with a stable code; none does I/O.

The body is whatever the courier's jsonnet ``body`` makes of its context (``courier/
http_channel.go``, ``httpDataModel``)::

    {"recipient", "subject", "body", "html_body", "template_type", "template_data": {...},
     "message_type": "email" | "sms", "request_headers"}

With ``body: base64://ZnVuY3Rpb24oY3R4KSBjdHg=`` (``function(ctx) ctx``) all of it arrives. Kratos's
default body sends only ``recipient, template_type, to, recovery_code, recovery_url,
verification_url, verification_code, subject, body``: no login or registration code, which is
then read from ``body`` (the SMS texts end with ``@<domain> #<code>``, Web OTP's origin-bound
line; an email's plain text states the code on a line of its own).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, Literal

from ..config.kratos import KratosIntakeConfig
from ..errors import RequestError
from ..text.codes import find_code
from ..text.sanitize import has_control
from .doc import OBJ, STR, HookDoc, Schemes, obj
from .hook import Delivery, Hook, Inbound, Translated, obj_field

Channel = Literal["email", "sms"]
_LINK = re.compile(r"^https?://\S+$", re.IGNORECASE)
_LOCALE = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")
_ORIGIN_BOUND = re.compile(r"^@\S+ #(\S{4,12})\s*$", re.MULTILINE)  # "@example.com #123456"
_HASH_LINE = re.compile(r"^#([A-Za-z0-9]{4,12})\s*$", re.MULTILINE)

# template_type -> (usage type, the template_data key of its code, of its link). A ``*_valid``
# code type is a one-time code for a usage type Logto knows; ``*_invalid`` and the notices carry
# no code and use the notice templates (shared with Supabase's notices where the meaning is the
# same). The link strategy's messages (``recovery_valid``, ``verification_valid``) are sent with
# Kratos's own text, which holds the link (see :func:`translate`).
MESSAGE = "Message"  # the usage type whose templates send a text as is (``message``, ``subject``)
ADDRESS_CHANGED = {"email": "EmailChanged", "sms": "PhoneChanged"}
TEMPLATE_TYPES: Mapping[str, tuple[str, str | None, str | None]] = {
    "login_code_valid": ("SignIn", "login_code", None),
    "registration_code_valid": ("Register", "registration_code", None),
    "verification_code_valid": ("BindNewIdentifier", "verification_code", "verification_url"),
    "recovery_code_valid": ("ForgotPassword", "recovery_code", None),
    "recovery_valid": ("ForgotPassword", None, "recovery_url"),
    "verification_valid": ("BindNewIdentifier", None, "verification_url"),
    "recovery_invalid": ("UnknownAccount", None, None),
    "recovery_code_invalid": ("UnknownAccount", None, None),
    "verification_invalid": ("UnknownAccount", None, None),
    "verification_code_invalid": ("UnknownAccount", None, None),
    "login_code_invalid": ("UnknownAccount", None, None),
    "verifiable_address_changed": ("AddressChanged", None, None),  # by channel: ADDRESS_CHANGED
    "authenticator_key_added": ("MfaFactorEnrolled", None, None),
    "stub": (MESSAGE, None, None),  # Kratos's test message: its subject and body as is
}
"""Every ``template_type`` of Kratos v26.2 (``courier/template/type.go``), plus
``login_code_invalid`` (in Kratos's master branch). Another type is refused: 422
``unknown_template_type`` naming it (Kratos then retries and finally abandons the message): a
new type may carry a code we would not find, and a wrong message is worse than none."""
# Where an identity keeps its language: Ory's docs use traits.language for translated templates.
LOCALE_TRAITS = ("language", "locale", "lang", "preferred_language")


def _unauthorized(message: str) -> RequestError:
    return RequestError("unauthorized", message, 401)


def _same(given: str, wanted: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), wanted.encode("utf-8", "surrogateescape")
    )


def check_basic(header: str | None, user: str, password: str) -> None:
    """Raise 401 unless ``header`` is ``Basic base64(user:password)`` (Kratos's ``basic_auth``)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise _unauthorized("missing or invalid Authorization: Basic header")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _unauthorized("missing or invalid Authorization: Basic header") from None
    given_user, _, given_password = decoded.partition(":")
    # Both compared, always: timing tells nothing about which was wrong.
    ok = [_same(given_user, user), _same(given_password, password)]
    if not all(ok):
        raise _unauthorized("missing or invalid Authorization: Basic header")


def check_api_key(
    headers: Mapping[str, str], name: str, value: str, where: Literal["header", "cookie"]
) -> None:
    """Raise 401 unless the request carries ``value`` in header ``name``, or in cookie ``name``
    (Kratos's ``api_key`` with ``in: header`` or ``in: cookie``)."""
    given: str | None
    if where == "header":
        given = headers.get(name)
    else:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers.get("Cookie", ""))
        except CookieError:
            raise _unauthorized(f"missing or invalid {name} cookie") from None
        morsel = jar.get(name)
        given = morsel.value if morsel is not None else None
    what = f"{name} {'header' if where == 'header' else 'cookie'}"
    if given is None or not _same(given, value):
        raise _unauthorized(f"missing or invalid {what}")


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def code_in_body(body: str | None) -> str | None:
    """The code in Kratos's rendered text: its origin-bound last line (``@domain #123456``), a
    ``#123456`` line, else the likeliest code in the text."""
    if not body:
        return None
    for pattern in (_ORIGIN_BOUND, _HASH_LINE):
        if found := pattern.findall(body):
            return str(found[-1])
    return find_code(body)


def _locale(identity: Mapping[str, Any], transient: Mapping[str, Any]) -> str | None:
    """The identity's language: the flow's ``transient_payload``, its traits, then its public
    metadata (the first of ``language``, ``locale``, ``lang``, ``preferred_language``)."""
    places = (transient, identity.get("traits"), identity.get("metadata_public"))
    for place in places:
        if not isinstance(place, Mapping):
            continue
        for key in LOCALE_TRAITS:
            value = place.get(key)
            if isinstance(value, str) and _LOCALE.match(value):
                return value
    return None


def _user(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The identity as templates know Logto's user (``user.name`` greets them)."""
    traits = identity.get("traits")
    traits = traits if isinstance(traits, Mapping) else {}
    name = traits.get("name")
    if isinstance(name, Mapping):  # Kratos's quickstart schema: {first, last}
        name = " ".join(p for p in (_text(name.get("first")), _text(name.get("last"))) if p)
    return {
        "id": _text(identity.get("id")) or "",
        "name": _text(name) or _text(traits.get("username")) or "",
        "username": _text(traits.get("username")) or "",
        "primaryEmail": _text(traits.get("email")) or "",
        "primaryPhone": _text(traits.get("phone")) or "",
    }


def translate(channel: Channel, data: Any) -> Translated:
    """The decoded body of a courier request on ``channel`` as the send path's input.

    400 when it is not Kratos's shape, 422 ``unknown_template_type`` naming a type we do not
    know, 422 ``missing_code`` when a code type comes without its code."""
    if not isinstance(data, Mapping):
        raise RequestError("invalid_request", "the body must be a JSON object")
    template_type = _text(data.get("template_type"))
    if template_type is None:
        raise RequestError("missing_field", "'template_type' is required")
    known = TEMPLATE_TYPES.get(template_type)
    if known is None:
        raise RequestError(
            "unknown_template_type",
            f"Kratos template_type {template_type[:100]!r} is not one otp-service knows",
            422,
        )
    usage, code_key, link_key = known
    usage = ADDRESS_CHANGED[channel] if usage == "AddressChanged" else usage
    sent_as = data.get("message_type")
    if sent_as in ("email", "sms") and sent_as != channel:
        raise RequestError(
            "wrong_channel",
            f"this is a Kratos {sent_as} message: send it to /v1/hooks/kratos/{sent_as}",
        )
    tdata = obj_field(data, "template_data")
    # The full context and the default body both have recipient; the default body adds "to"
    # and the codes and links at the top level.
    to = _text(data.get("recipient")) or _text(tdata.get("to")) or _text(data.get("to"))
    if to is None:
        raise RequestError("missing_field", "'recipient' is required")
    body = data.get("body") if isinstance(data.get("body"), str) else None
    code = None
    if code_key is not None:
        # The SMS recovery code is tagged verification_code in Kratos (sms/recovery_code.go).
        keys = [code_key] + (["verification_code"] if code_key == "recovery_code" else [])
        for key in keys:
            value = tdata.get(key, data.get(key))
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                code = str(value)
                break
        if code is not None and (len(code) > 64 or has_control(code)):
            raise RequestError("invalid_request", f"the {code_key} is not a one-time code")
        code = code or code_in_body(body)
        if code is None:
            raise RequestError(
                "missing_code", f"no code in this Kratos {template_type} message", 422
            )
    identity = obj_field(tdata, "identity")
    transient = obj_field(tdata, "transient_payload")
    payload: dict[str, Any] = {
        "user": _user(identity),
        "kratos": {
            "template_type": template_type,
            "subject": _text(data.get("subject")) or "",
            "body": body or "",
            "request_url": _text(tdata.get("request_url")) or "",
            "expires_in_minutes": tdata.get("expires_in_minutes"),
        },
    }
    if code is not None:
        payload["code"] = code
    if link_key is not None:
        link = _text(tdata.get(link_key)) or _text(data.get(link_key))
        if link and _LINK.match(link):
            payload["link"] = link
        if code is None and body:  # a link message: Kratos's text carries the link
            usage = MESSAGE
    if usage == MESSAGE:
        if not body or not body.strip():
            raise RequestError("missing_field", f"'body' is required for a Kratos {template_type}")
        payload["message"] = body.strip()
        payload["subject"] = _text(data.get("subject"))
    if (locale := _locale(identity, transient)) is not None:
        payload["locale"] = locale
    ttl = None
    minutes = tdata.get("expires_in_minutes")
    if isinstance(minutes, int) and not isinstance(minutes, bool) and 0 < minutes <= 1440:
        payload["ttl_minutes"] = minutes  # the text says what Kratos's code allows
        ttl = minutes * 60.0
    return Translated(channel, to, usage, payload, ttl, kind=template_type)


class KratosHook(Hook):
    """``POST /v1/hooks/kratos/{email,sms}``: the courier's HTTP email delivery and its ``sms``
    channel. Any 2xx is "sent" to Kratos and anything else is queued again (up to
    ``courier.message_retries``), so the house answers suit it; a re-sent message is
    recognised by :meth:`.hook.Translated.replay_key`."""

    name = "kratos"
    wait_seconds = 8.0  # well inside Kratos's HTTP client timeout
    form_encoded = True  # request_config.headers Content-Type: application/x-www-form-urlencoded
    doc = HookDoc(
        "Ory Kratos's courier, HTTP delivery (docs/intakes.md)",
        {
            channel: obj(
                ["recipient", "template_type"],
                recipient=STR,
                template_type=STR,
                template_data=OBJ,
                subject=STR,
                body=STR,
                message_type=STR,
            )
            for channel in ("email", "sms")
        },
    )

    def __init__(self, config: KratosIntakeConfig) -> None:
        self.config = config

    def schemes(self) -> Schemes:
        """Basic auth or an API key (header or cookie), as configured; basic auth wins (verify)."""
        key = self.config.api_key
        if self.config.basic_auth is None and key is not None:
            where = "cookie" if key.where == "cookie" else "header"
            return {
                "kratos_api_key": {
                    "type": "apiKey",
                    "in": where,
                    "name": key.name,
                    "description": "intakes.kratos.api_key (Kratos's request_config.auth api_key)",
                }
            }
        return {
            "kratos_basic": {
                "type": "http",
                "scheme": "basic",
                "description": "intakes.kratos.basic_auth "
                "(Kratos's request_config.auth basic_auth)",
            }
        }

    def verify(self, inbound: Inbound, now: float) -> None:
        if (basic := self.config.basic_auth) is not None:
            check_basic(inbound.headers.get("Authorization"), basic.user, basic.password)
        elif (key := self.config.api_key) is not None:
            where: Literal["header", "cookie"] = "cookie" if key.where == "cookie" else "header"
            check_api_key(inbound.headers, key.name, key.value, where)
        else:  # the config check refuses this; never serve without credentials
            raise _unauthorized("no Kratos credentials are configured")

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        return [translate(channel, data).delivery(self.name, inbound.body)]
