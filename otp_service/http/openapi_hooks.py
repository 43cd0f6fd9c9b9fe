"""What the OpenAPI document says of each hook route (``POST /v1/hooks/<system>/<channel>``).

Only configured systems have routes (:mod:`.hooks`), so :func:`otp_service.http.openapi.document`
adds an operation for each route of the configured hooks, from the entry of its system here: a
summary, a JSON Schema summarising the body the system sends (extra keys accepted, as the hooks
accept them) and the security schemes it authenticates with — its own credentials
(``intakes.<system>``), never ``auth.tokens``. A system without an entry here fails
``tests/test_openapi.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..intake.hook import Hook
from ..intake.kratos import KratosHook
from ..message.compose import Channel

Schema = dict[str, Any]
Schemes = dict[str, Schema]  # security scheme name -> OpenAPI security scheme object


def _obj(required: list[str], **properties: Schema) -> Schema:
    return {
        "type": "object",
        **({"required": required} if required else {}),
        "properties": properties,
        "additionalProperties": True,
    }


_STR: Schema = {"type": "string"}
_OBJ: Schema = {"type": "object"}


@dataclass(frozen=True)
class HookDoc:
    """One system's OpenAPI entry: a summary, the body per channel, its security schemes."""

    summary: str
    bodies: dict[Channel, Schema]
    schemes: Callable[[Hook], Schemes]
    form_encoded: bool = False  # the body may also be application/x-www-form-urlencoded

    def security(self, hook: Hook) -> tuple[Schemes, list[dict[str, list[str]]]]:
        """The hook's schemes, and its security requirement: any one of them."""
        schemes = self.schemes(hook)
        return schemes, [{name: []} for name in schemes]


def _fixed(schemes: Schemes) -> Callable[[Hook], Schemes]:
    return lambda hook: schemes


def _kratos_schemes(hook: Hook) -> Schemes:
    """Basic auth or an API key (header or cookie), as configured; basic auth wins (verify)."""
    assert isinstance(hook, KratosHook)
    key = hook.config.api_key
    if hook.config.basic_auth is None and key is not None:
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
            "description": "intakes.kratos.basic_auth (Kratos's request_config.auth basic_auth)",
        }
    }


_USER = _obj([], email=_STR, new_email=_STR, phone=_STR, user_metadata=_OBJ)

HOOK_DOCS: dict[str, HookDoc] = {
    "supabase": HookDoc(
        "Supabase Auth's Send Email / Send SMS hook (docs/intakes.md)",
        {
            "email": _obj(
                ["user", "email_data"],
                metadata=_OBJ,
                user=_USER,
                email_data=_obj(
                    ["email_action_type"],
                    email_action_type=_STR,
                    token=_STR,
                    token_hash=_STR,
                    token_new=_STR,
                    token_hash_new=_STR,
                    redirect_to=_STR,
                    site_url=_STR,
                ),
            ),
            "sms": _obj(
                ["sms"], metadata=_OBJ, user=_USER, sms=_obj(["otp"], otp=_STR, phone=_STR)
            ),
        },
        _fixed(
            {
                "supabase_signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "webhook-signature",
                    "description": "Standard Webhooks: v1,<base64 HMAC-SHA256> over webhook-id, "
                    "webhook-timestamp and the body, with a secret of intakes.supabase.secrets",
                }
            }
        ),
    ),
    "authentik": HookDoc(
        "Authentik's generic SMS provider (docs/intakes.md)",
        {"sms": _obj(["To", "Body"], From=_STR, To=_STR, Body=_STR, Message=_STR)},
        _fixed(
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
            }
        ),
    ),
    "generic": HookDoc(
        "The generic hook: {to, code | message, type?, locale?, subject?} (docs/intakes.md)",
        {
            channel: _obj(
                ["to"],
                to=_STR,
                code={"type": ["string", "integer"]},
                message=_STR,
                type=_STR,
                locale=_STR,
                subject=_STR,
            )
            for channel in ("email", "sms")
        },
        _fixed(
            {
                "generic_bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token of intakes.generic.tokens",
                }
            }
        ),
    ),
    "zitadel": HookDoc(
        "ZITADEL's HTTP email / HTTP SMS provider (docs/intakes.md)",
        {
            channel: _obj(
                ["contextInfo"],
                contextInfo=_obj(
                    ["eventType"],
                    eventType=_STR,
                    recipientEmailAddress=_STR,
                    recipientPhoneNumber=_STR,
                    provider=_OBJ,
                ),
                templateData=_OBJ,
                args=_OBJ,
            )
            for channel in ("email", "sms")
        },
        _fixed(
            {
                "zitadel_signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "ZITADEL-Signature",
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256> over the body, with a "
                    "key of intakes.zitadel.signing_keys",
                }
            }
        ),
    ),
    "kratos": HookDoc(
        "Ory Kratos's courier, HTTP delivery (docs/intakes.md)",
        {
            channel: _obj(
                ["recipient", "template_type"],
                recipient=_STR,
                template_type=_STR,
                template_data=_OBJ,
                subject=_STR,
                body=_STR,
                message_type=_STR,
            )
            for channel in ("email", "sms")
        },
        _kratos_schemes,
        form_encoded=True,
    ),
}
