"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

One entry per route of :func:`otp_service.http.app.create_app`; ``tests/test_openapi.py`` fails
when a route has no entry (or an entry no route), and runs schemathesis against the running
service from this document. Adding an endpoint: add its operation to :data:`PATHS`, reusing
the schemas and the error responses below.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import __version__

JSON = "application/json"
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
            "locale": _nullable("string"),
            "subject": _nullable("string"),
            "text": {"type": "string"},
            "html": _nullable("string"),
            "code": _nullable("string"),
            "link": _nullable("string"),
            "status": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
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

_ERROR_TEXT = {
    400: "Bad request: invalid_json, invalid_request, missing_field, invalid_type, "
    "invalid_email, invalid_phone, invalid_header_value, invalid_query",
    401: "unauthorized: missing or wrong Authorization: Bearer <token>",
    403: "destination_not_allowed (SMS country lists, premium-rate numbers)",
    404: "not_found, message_not_found",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "template_not_found, template_error, sms_too_long",
    429: "rate_limited (an abuse limit), with Retry-After",
    502: "message_expired, provider_rejected, provider_outcome_unknown",
    503: "shutting_down, store_unavailable, provider_unavailable",
}


def errors(*statuses: int) -> dict[str, Any]:
    """The error responses of an operation, all ``{"error": {"code", "message"}}``."""
    return {
        str(s): {"description": _ERROR_TEXT[s], "content": {JSON: {"schema": ref("Error")}}}
        for s in statuses
    }


def ok(schema: Schema, description: str = "OK", media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_SEND_ERRORS = errors(400, 401, 403, 413, 415, 422, 429, 502, 503)
_FILTERS = [
    {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "recipient"},
    {"name": "channel", "in": "query", "schema": {"type": "string", "enum": ["email", "sms"]}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
    },
]


_EXAMPLES = {
    "email": {"to": "user@example.com", "type": "SignIn", "payload": {"code": "123456"}},
    "sms": {"to": "+33612345678", "type": "SignIn", "payload": {"code": "123456"}},
}
# After a send, its id can be looked up: lets a test client follow one message end to end.
_STATUS_LINK = {
    "status": {"operationId": "get_message", "parameters": {"id": "$response.body#/id"}}
}


def _send(channel: str) -> dict[str, Any]:
    answered = {"content": {JSON: {"schema": ref("SendAnswer")}}, "links": _STATUS_LINK}
    return {
        "post": {
            "operationId": f"send_{channel}",
            "summary": f"Logto's HTTP {'Email' if channel == 'email' else 'SMS'} connector",
            "security": _AUTH,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("SendRequest"), "example": _EXAMPLES[channel]}},
            },
            "responses": {
                "200": {"description": "delivered (sent or captured)", **answered},
                "202": {"description": "stored; still being delivered (queued)", **answered},
                **_SEND_ERRORS,
            },
        }
    }


PATHS: dict[str, dict[str, Any]] = {
    "/v1/email": _send("email"),
    "/v1/sms": _send("sms"),
    "/v1/messages": {
        "get": {
            "operationId": "list_messages",
            "summary": "Captured messages, newest first",
            "security": _AUTH,
            "parameters": _FILTERS,
            "responses": {"200": ok(ref("MessageList")), **errors(400, 401)},
        },
        "delete": {
            "operationId": "clear_messages",
            "summary": "Empty the capture inbox",
            "security": _AUTH,
            "responses": {"200": ok(ref("Deleted")), **errors(401)},
        },
    },
    "/v1/messages/{id}": {
        "get": {
            "operationId": "get_message",
            "summary": "Any message's status and attempts",
            "security": _AUTH,
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"200": ok(ref("MessageStatus")), **errors(401, 404)},
        }
    },
    "/inbox": {
        "get": {
            "operationId": "inbox_page",
            "summary": "The capture inbox as a web page",
            "security": _AUTH,
            "parameters": _FILTERS,
            "responses": {
                "200": ok({"type": "string"}, media="text/html"),
                **errors(400, 401),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": ok(ref("Health"))},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: the store's state and each provider's last outcome",
            "security": [],
            "responses": {
                "200": ok(ref("Readiness"), "ready"),
                "503": ok(ref("Readiness"), "shutting down, or the store does not answer"),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus text exposition",
            "security": _AUTH,
            "responses": {"200": ok({"type": "string"}, media="text/plain"), **errors(401)},
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": ok({"type": "object"})},
        }
    },
}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh copy)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "otp-service",
                "version": __version__,
                "description": "Delivers Logto's one-time passcodes by email and SMS.",
            },
            "paths": PATHS,
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": _AUTH,
        }
    )
