"""Authentik's generic SMS provider (its SMS authenticator setup stage, provider "Generic").

Authentik posts ``{"From", "To", "Body", "Message"}`` to its "External API URL": ``Body`` is the
code alone, ``Message`` the text Authentik would send ("Use this code to authenticate in
authentik: <code>"); ``Authorization: Bearer <Auth>`` (auth type bearer) or Basic
``<Auth>:<Auth password>`` (auth type basic: our token is the password, the user is anything).
Source: goauthentik/authentik ``authentik/stages/authenticator_sms/models.py``
(``send_generic``). It does not retry and shows our error text to the user on a status >= 400.

We render the code with the ``MfaVerification`` SMS templates (setting up or using an SMS
authenticator is a second factor), so the text is translated and branded; ``To`` is the phone
number the user typed. A webhook mapping in Authentik may replace the whole body: point such a
one at the generic hook instead.
"""

from __future__ import annotations

from typing import Any

from ..config.authentik import AuthentikIntakeConfig
from ..config.registry import fallback_intake
from ..errors import RequestError
from ..message.compose import Channel, SendRequest
from .doc import STR, HookDoc, obj
from .hook import Delivery, Hook, Inbound, bearer_or_basic, body_key, check_tokens, text_field

USAGE = "MfaVerification"
# A mapping that sends a whole text in Body belongs on the hook that takes any caller's JSON.
_OTHER_SHAPES = f"send other shapes to /v1/hooks/{fallback_intake()}/sms"


class AuthentikHook(Hook):
    name = "authentik"
    channels = ("sms",)
    doc = HookDoc(
        "Authentik's generic SMS provider (docs/intakes.md)",
        {"sms": obj(["To", "Body"], From=STR, To=STR, Body=STR, Message=STR)},
        {
            "authentik_bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token of intakes.authentik.tokens (auth type bearer)",
            },
            "authentik_basic": {
                "type": "http",
                "scheme": "basic",
                "description": "any user, a token of intakes.authentik.tokens as the "
                "password (auth type basic)",
            },
        },
    )

    def __init__(self, config: AuthentikIntakeConfig) -> None:
        self.tokens = config.tokens

    def verify(self, inbound: Inbound, now: float) -> None:
        check_tokens(bearer_or_basic(inbound.headers, basic=True), self.tokens)

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        if not isinstance(data, dict):
            raise RequestError("invalid_request", "the body must be a JSON object")
        to = text_field(data, "To")
        if to is None:
            raise RequestError("missing_field", "'To' is required")
        code = text_field(data, "Body")
        if code is None:
            raise RequestError("missing_field", "'Body' (the code) is required")
        if not code.isascii() or not code.isalnum() or len(code) > 32:
            raise RequestError("invalid_request", f"'Body' must be the code alone; {_OTHER_SHAPES}")
        request = SendRequest(to=to, type=USAGE, payload={"code": code}, source=self.name)
        return [Delivery(channel, request, body_key(inbound.body))]
