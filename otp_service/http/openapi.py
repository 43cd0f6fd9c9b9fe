"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

One entry per route of :func:`otp_service.http.app.create_app`; ``tests/test_openapi.py`` fails
when a route has no entry (or an entry no route), and runs schemathesis against the running
service from this document. Adding an endpoint: add its operation to :data:`PATHS`, reusing
the schemas (:mod:`.openapi_schemas`) and the error responses below. The hook routes exist only
for configured systems: :func:`document` adds theirs (:func:`hook_paths`, from each hook's own
``doc``: :mod:`otp_service.intake.doc`), each with the system's own security schemes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..intake.hook import Hook
from ..message.compose import Channel
from .openapi_schemas import SCHEMAS, Schema, ref

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


_ERROR_TEXT = {
    400: "Bad request: invalid_json, invalid_request, missing_field, invalid_type, "
    "invalid_email, invalid_phone, invalid_header_value, invalid_query",
    401: "unauthorized: missing or wrong Authorization: Bearer <token>",
    403: "insufficient_scope (the token lacks the scope this operation's security names: "
    "send, read or admin), destination_not_allowed (SMS country lists, premium-rate numbers)",
    404: "not_found (also every capture inbox route where nothing is captured and capture.api "
    "is off), message_not_found",
    409: "idempotency_key_in_use: a request with this Idempotency-Key is still being decided "
    "(Retry-After)",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "template_not_found, template_error, sms_too_long",
    429: "rate_limited (an abuse limit), with Retry-After",
    502: "message_expired, provider_rejected, provider_outcome_unknown",
    421: "host_not_allowed: the Host is not a name this service is reached by "
    "(server.allowed_hosts)",
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
# The scope (auth.tokens[].scopes) each operation needs: OpenAPI 3.1 lists roles for http.
_SEND: list[dict[str, list[str]]] = [{"bearer": ["send"]}]
_READ: list[dict[str, list[str]]] = [{"bearer": ["read"]}]
_ADMIN: list[dict[str, list[str]]] = [{"bearer": ["admin"]}]
_SEND_ERRORS = errors(400, 401, 403, 409, 413, 415, 422, 429, 502, 503)
_TO = {"name": "to", "in": "query", "schema": {"type": "string"}, "description": "recipient"}
_MATCH = [
    _TO,
    {"name": "channel", "in": "query", "schema": {"type": "string", "enum": ["email", "sms"]}},
    {"name": "type", "in": "query", "schema": {"type": "string"}, "description": "usage type"},
]
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _static(media: str, summary: str) -> dict[str, Any]:
    return {
        "get": {
            "operationId": summary.replace(" ", "_"),
            "summary": summary,
            "security": [],
            "responses": {"200": ok({"type": "string"}, media=media)},
        }
    }


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
            "security": _SEND,
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


def _receipt_error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {JSON: {"schema": ref("Error")}}}


_RECEIPT_ERRORS = {
    "400": _receipt_error("receipt_invalid: not the provider's documented receipt"),
    "401": _receipt_error("receipt_unsigned, receipt_forged: the provider's signature or token"),
    "403": _receipt_error("receipt_mismatch: it names another number than the message's"),
    "404": _receipt_error("receipt_unmatched (no such message yet), receipt_not_configured"),
    "413": _receipt_error("payload_too_large"),
}
_RECEIPT_BODY = {
    "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        JSON: {"schema": {}},
    }
}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/email": _send("email"),
    "/v1/sms": _send("sms"),
    "/v1/messages": {
        "get": {
            "operationId": "list_messages",
            "summary": "Captured messages, newest first",
            "security": _READ,
            "parameters": [*_MATCH, _LIMIT],
            "responses": {"200": ok(ref("MessageList")), **errors(400, 401, 403, 404)},
        },
        "delete": {
            "operationId": "clear_messages",
            "summary": "Empty the capture inbox, or one recipient's part (and its limit counts)",
            "security": _ADMIN,
            "parameters": [_TO],
            "responses": {"200": ok(ref("Deleted")), **errors(400, 401, 403, 404)},
        },
    },
    "/v1/messages/latest": {
        "get": {
            "operationId": "latest_message",
            "summary": "The newest matching captured message; with wait, the first to arrive",
            "security": _READ,
            "parameters": [
                *_MATCH,
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "an RFC 3339 time, or the id of a captured message",
                },
                {
                    "name": "wait",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
                },
            ],
            "responses": {
                "200": ok(ref("CapturedMessage")),
                **errors(400, 401, 403, 404, 503),
            },
        }
    },
    "/v1/messages/events": {
        "get": {
            "operationId": "message_events",
            "summary": "Server-Sent Events: ready, then added, deleted, cleared",
            "security": _READ,
            "responses": {
                "200": ok(
                    {
                        "type": "object",
                        "description": "one event; data: a captured message's JSON, or {id}",
                        "required": ["event", "data"],
                        "properties": {
                            "event": {"enum": ["ready", "added", "deleted", "cleared"]},
                            "data": {"type": "string"},
                        },
                    },
                    "an event stream (each event as this schema)",
                    media="text/event-stream",
                ),
                **errors(401, 403, 404),
            },
        }
    },
    "/v1/messages/{id}": {
        "get": {
            "operationId": "get_message",
            "summary": "Any message's status and attempts",
            "security": _READ,
            "parameters": [_ID],
            "responses": {"200": ok(ref("MessageStatus")), **errors(401, 403, 404)},
        },
        "delete": {
            "operationId": "delete_message",
            "summary": "Delete one captured message",
            "security": _ADMIN,
            "parameters": [_ID],
            "responses": {"200": ok(ref("Deleted")), **errors(401, 403, 404)},
        },
    },
    "/v1/receipts/{provider}": {
        method: {
            "operationId": f"receipt_{method}",
            "summary": "A provider's delivery receipts (docs/receipts.md), authenticated by "
            "the provider's own signature or token, not a bearer token",
            "security": [],
            "parameters": [
                {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            **({"requestBody": _RECEIPT_BODY} if method == "post" else {}),
            "responses": {
                "200": ok({"type": "object"}, "taken (a batch: the answer its provider wants)"),
                "204": {"description": "taken (a repeat too)"},
                **_RECEIPT_ERRORS,
            },
        }
        for method in ("get", "post")
    },
    # The live inbox page: static files; the page asks for a token and sends it to the API.
    "/inbox": _static("text/html", "inbox page"),
    "/inbox/inbox.js": _static("text/javascript", "inbox script"),
    "/inbox/inbox.css": _static("text/css", "inbox style"),
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
            "security": _READ,
            "responses": {
                "200": ok({"type": "string"}, media="text/plain"),
                **errors(401, 403),
            },
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


_HOOK_ERRORS = (400, 401, 403, 409, 413, 415, 422, 429, 502, 503)
_HOOK_401 = "unauthorized: the request does not carry this system's credentials (intakes.<system>)"


def _hook_operation(hook: Hook, channel: Channel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operation of ``POST /v1/hooks/<hook>/<channel>``, and the security schemes it names."""
    doc = hook.doc
    schemes = hook.schemes()
    security: list[dict[str, list[str]]] = [{name: []} for name in schemes]  # any one of them
    body = {"schema": doc.bodies[channel]}
    content = {JSON: body, **({FORM: body} if hook.form_encoded else {})}
    if (answer := doc.answer) is not None:  # the system hears its refusals inside a 200
        responses = {"200": ok(answer.schema, answer.description), **errors(*answer.errors)}
    else:
        answered = {"content": {JSON: {"schema": ref("SendAnswer")}}}
        responses = {
            "200": {"description": "delivered (sent or captured)", **answered},
            "202": {"description": "stored; still being delivered (queued)", **answered},
            "204": {"description": "taken, nothing to send"},
            **errors(*_HOOK_ERRORS),
        }
    responses["401"] = {**responses["401"], "description": _HOOK_401}
    operation = {
        "operationId": f"hook_{hook.name}_{channel}",
        "summary": doc.summary,
        "description": "Authenticated by the system's own credentials, not auth.tokens: no "
        "scope applies. Only configured systems have routes; any other /v1/hooks/ path "
        "answers 404.",
        "security": security,
        "requestBody": {"required": True, "content": content},
        "responses": responses,
    }
    return operation, schemes


def hook_paths(hooks: Sequence[Hook]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operations of the configured hooks' routes (:mod:`.hooks`), and their schemes."""
    paths: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    for hook in hooks:
        for channel in hook.channels:
            operation, named = _hook_operation(hook, channel)
            paths[f"/v1/hooks/{hook.name}/{channel}"] = {"post": operation}
            schemes.update(named)
    return paths, schemes


def document(hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (a fresh copy), with the routes of the configured
    ``hooks``; every operation may answer 421 (a Host the service is not reached by:
    :mod:`.hosts`)."""
    added, hook_schemes = hook_paths(hooks)
    paths = {**copy.deepcopy(PATHS), **added}
    for operations in paths.values():
        for operation in operations.values():
            operation["responses"].update(errors(421))
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "otp-service",
                "version": __version__,
                "description": "Delivers Logto's one-time passcodes by email and SMS.",
            },
            "paths": paths,
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "a token of auth.tokens",
                    },
                    **hook_schemes,
                },
            },
            "security": _AUTH,
        }
    )
