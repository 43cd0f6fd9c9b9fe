"""The generic hook: ``{to, code | message, type?, locale?, subject?}`` with a bearer token.

For anything that can POST JSON and has no contract of its own: Keycloak's community SMS
authenticators (netzbegruenung/keycloak-mfa-plugins: set its message and receiver attribute
names to ``message`` and ``to``, its API token to ``Bearer <token>``), scripts, other systems.

- ``code`` (a string or an integer): rendered with the templates of ``type`` (default
  ``Generic``) in the language ``locale`` (else the default), like a Logto request;
- ``message``: sent as is (usage type ``Message``; email: with ``subject``); a code in it is
  found for the inbox. ``type`` does not apply to it (400 ``invalid_request``).

Replays: an ``Idempotency-Key`` header names the request; without one, a body carrying a code is
its own key (the caller's retry is answered as the first); a plain message is deduplicated only
by its content, like Logto's requests.
"""

from __future__ import annotations

from typing import Any

from ..config.generic import GenericIntakeConfig
from ..errors import RequestError
from ..message.compose import Channel, SendRequest, parse_request
from ..text.codes import find_code
from ..text.sanitize import has_control
from .doc import STR, HookDoc, obj
from .hook import Delivery, Hook, Inbound, bearer_or_basic, body_key, check_tokens, text_field

MESSAGE = "Message"  # the usage type whose bundled templates send ``message`` as is


class GenericHook(Hook):
    name = "generic"
    doc = HookDoc(
        "The generic hook: {to, code | message, type?, locale?, subject?} (docs/intakes.md)",
        {
            channel: obj(
                ["to"],
                to=STR,
                code={"type": ["string", "integer"]},
                message=STR,
                type=STR,
                locale=STR,
                subject=STR,
            )
            for channel in ("email", "sms")
        },
        {
            "generic_bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token of intakes.generic.tokens",
            }
        },
    )

    def __init__(self, config: GenericIntakeConfig) -> None:
        self.tokens = config.tokens

    def verify(self, inbound: Inbound, now: float) -> None:
        check_tokens(bearer_or_basic(inbound.headers, basic=False), self.tokens)

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        if not isinstance(data, dict):
            raise RequestError("invalid_request", "the body must be a JSON object")
        message = text_field(data, "message")
        subject = text_field(data, "subject")
        code = data.get("code")
        if message is None and code in (None, ""):
            raise RequestError("missing_field", "'code' or 'message' is required")
        payload: dict[str, Any] = {}
        if data.get("locale") is not None:
            payload["locale"] = data["locale"]
        if message is not None:
            if data.get("type") not in (None, "", MESSAGE):
                raise RequestError(
                    "invalid_request", "'type' applies to a code; a 'message' is sent as is"
                )
            if subject is not None and has_control(subject):
                raise RequestError("invalid_header_value", "'subject' contains control characters")
            payload["message"] = message
            if subject is not None:
                payload["subject"] = subject
            if code in (None, ""):
                code = find_code(message)
        if code not in (None, ""):
            payload["code"] = code
        usage = MESSAGE if message is not None else data.get("type") or "Generic"
        # Logto's checks, once: to, type, code and locale are validated exactly as theirs.
        request = parse_request({"to": data.get("to"), "type": usage, "payload": payload})
        key = inbound.headers.get("Idempotency-Key")
        if key is not None and (not key or len(key) > 255 or has_control(key)):
            raise RequestError(
                "invalid_header_value", "Idempotency-Key must be 1 to 255 printable characters"
            )
        replay = key or (body_key(inbound.body) if "code" in payload else None)
        return [Delivery(channel, _sourced(request), replay)]


def _sourced(request: SendRequest) -> SendRequest:
    return SendRequest(request.to, request.type, request.payload, source=GenericHook.name)
