"""The schemas of the OpenAPI document (:mod:`.openapi`): request and answer bodies."""

from __future__ import annotations

from typing import Any

from ..config.registry import intake_names

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "stable machine code"},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "SendRequest": {
        "type": "object",
        "description": "Logto's HTTP Email / HTTP SMS connector request; extra keys accepted.",
        "required": ["to", "type"],
        "properties": {
            "to": {"type": "string", "description": "email address or phone number"},
            "type": {"type": "string", "description": "usage type: SignIn, Register, ..."},
            "payload": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "link": {"type": "string"},
                    "locale": {"type": "string"},
                    "uiLocales": {"type": "string"},
                },
                "additionalProperties": True,
            },
            "ip": {"type": "string", "description": "the end user's address (abuse limits)"},
            "ttl": {"type": "number", "description": "seconds; may shorten the lifetime"},
        },
        "additionalProperties": True,
    },
    "SendAnswer": {
        "type": "object",
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["sent", "captured", "queued"]},
            "provider": {"type": "string"},
            "duplicate": {"type": "boolean"},
        },
    },
    "CapturedMessage": {
        "type": "object",
        "required": ["id", "channel", "to", "type", "text", "status", "created_at"],
        "properties": {
            "id": {"type": "string"},
            "channel": {"type": "string", "enum": ["email", "sms"]},
            "to": {"type": "string"},
            "type": {"type": "string"},
            "source": _nullable(
                "string",
                description="the system that asked: logto (Logto's contract), an intake "
                f"({', '.join(intake_names())}) or the SMTP intake",
            ),
            "locale": _nullable("string"),
            "subject": _nullable("string"),
            "text": {"type": "string"},
            "html": _nullable("string"),
            "code": _nullable("string"),
            "link": _nullable("string"),
            "status": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "headers": {
                "type": "array",
                "description": "email headers as [name, value] pairs",
                "items": {"type": "array", "items": {"type": "string"}},
            },
            "sms": {
                "type": ["object", "null"],
                "properties": {
                    "encoding": {"type": "string"},
                    "units": {"type": "integer"},
                    "segments": {"type": "integer"},
                },
            },
        },
    },
    "MessageList": {
        "type": "object",
        "required": ["messages"],
        "properties": {"messages": {"type": "array", "items": ref("CapturedMessage")}},
    },
    "Attempt": {
        "type": "object",
        "required": ["at", "provider", "outcome"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "provider": {"type": "string"},
            "outcome": {
                "type": "string",
                "enum": ["sent", "captured", "transient", "permanent", "unknown"],
            },
            "error": _nullable("string"),
            "provider_id": _nullable(
                "string",
                description="The provider's own id of the message (Vonage message-id, Aliyun "
                "BizId, the SMTP server's queue id), when it gave one.",
            ),
            "receipt": _nullable(
                "string",
                description="The delivery receipt's state: pending, unknown, undelivered, "
                "delivered (SMS accepted by a provider).",
            ),
            "receipt_at": _nullable("string", format="date-time"),
            "receipt_error": _nullable("string"),
        },
    },
    "Delivery": {
        "type": ["object", "null"],
        "description": "What became of an SMS after the provider accepted it (null: email, "
        "or never handed over).",
        "required": ["state", "final", "provider"],
        "properties": {
            "state": {"enum": ["pending", "delivered", "undelivered", "unknown"]},
            "final": {"type": "boolean"},
            "provider": {"type": "string"},
            "provider_id": _nullable("string"),
            "at": _nullable("string", format="date-time"),
            "seconds_to_handset": _nullable("number"),
            "error": _nullable("string", description="the carrier's error and its meaning"),
            "resent": {"type": "boolean", "description": "resent after an undelivered receipt"},
        },
    },
    "MessageStatus": {
        "type": "object",
        "description": "Status and attempts; the captured body and code too for a capture.",
        "required": ["id", "channel", "to", "type", "status"],
        "properties": {
            "id": {"type": "string"},
            "channel": {"type": "string", "enum": ["email", "sms"]},
            "to": {"type": "string"},
            "type": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["queued", "sent", "captured", "failed", "expired"],
            },
            "provider": _nullable("string"),
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time"},
            "finished_at": _nullable("string", format="date-time"),
            "error": _nullable("string"),
            "attempts": {"type": "array", "items": ref("Attempt")},
            "delivery": ref("Delivery"),
        },
        "additionalProperties": True,
    },
    "Deleted": {
        "type": "object",
        "required": ["deleted"],
        "properties": {"deleted": {"type": "integer", "minimum": 0}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "store", "providers"],
        "properties": {
            "status": {
                "type": "string",
                "enum": ["ready", "shutting_down", "store_unavailable"],
            },
            "store": {
                "type": "object",
                "required": ["state"],
                "properties": {
                    "state": {"type": "string", "enum": ["ok", "unavailable"]},
                    "pending": {"type": "integer", "minimum": 0},
                    "error": {"type": "string"},
                },
            },
            "logto_templates": {
                "type": "object",
                "description": "with templates.logto: the state of Logto's email templates",
            },
            "providers": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["last_outcome", "at"],
                    "properties": {
                        "last_outcome": _nullable("string"),
                        "at": _nullable("string", format="date-time"),
                    },
                },
            },
        },
    },
}
