"""The HTTP layer: parse, authenticate, validate, call the domain, map errors to JSON.

Paths: ``POST /v1/email``, ``POST /v1/sms`` (Logto's HTTP connectors), the capture inbox
(:mod:`.inbox_api`: ``/v1/messages...``), its page (:mod:`.inbox_page`: ``/inbox``); the
operators' endpoints (probes, metrics, ``/openapi.json``) are in :mod:`.ops`. Every route has
an entry in :mod:`.openapi`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from ..config import Config
from ..delivery.outcome import Outcome
from ..errors import OtpServiceError, ProviderError, RequestError
from ..logs import event, mask_recipient
from ..message.compose import Channel, parse_request
from ..message.templates import TemplateLibrary
from ..services import build_services
from ..store import StoreUnavailable
from ..text.sanitize import has_control, json_problem
from . import inbox_api, inbox_page, ops
from .access_log import request_id_middleware
from .context import CONFIG, SERVICES, authorize, error_response

__all__ = ["CONFIG", "SERVICES", "create_app", "error_response"]

__all__ = ["CONFIG", "SERVICES", "create_app", "error_response"]
log = logging.getLogger("otp_service.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"error": {"code", "message"}}``; nothing leaks."""
    try:
        return await handler(request)
    except ProviderError as exc:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        verb = "refused" if exc.status == 502 else "could not be reached for"
        return error_response(
            exc.status,
            exc.code,
            f"the {exc.provider} provider {verb} the message: {exc.reason}",
            headers,
        )
    except RequestError as exc:
        after = exc.retry_after
        headers = {"Retry-After": str(max(1, math.ceil(after)))} if after is not None else None
        return error_response(exc.status, exc.code, exc.message, headers)
    except StoreUnavailable:  # nothing was stored, so nothing was accepted: safe to retry
        return error_response(
            503, "store_unavailable", "the outbox store is unavailable; retry shortly",
            {"Retry-After": "1"},
        )  # fmt: skip
    except OtpServiceError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(
            exc.status,
            code,
            exc.reason,
            {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None,
        )
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "unexpected error; see the service log")


async def _read_json(request: web.Request) -> Any:
    limit = request.app[CONFIG].server.max_body_bytes
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise RequestError("unsupported_media_type", "send Content-Type: application/json", 415)
    if request.content_length is not None and request.content_length > limit:
        raise RequestError("payload_too_large", f"the body exceeds {limit} bytes", 413)
    try:
        async with asyncio.timeout(request.app[CONFIG].server.header_timeout_seconds):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError("payload_too_large", f"the body exceeds {limit} bytes", 413) from None
    except TimeoutError:  # a client trickling its body holds a connection: not for long
        raise RequestError("request_timeout", "the body did not arrive in time", 408) from None
    try:
        data = json.loads(body.decode(request.charset or "utf-8"))
    except (ValueError, LookupError, RecursionError):  # RecursionError: absurdly deep nesting
        raise RequestError("invalid_json", "the body is not valid JSON") from None
    # Checked before anything is composed or stored: such text fails wherever it goes next.
    if (problem := json_problem(data)) is not None:
        raise RequestError("invalid_request", f"the body cannot be accepted: {problem}")
    return data


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > 255 or has_control(key):
        raise RequestError(
            "invalid_header_value", "Idempotency-Key must be 1 to 255 printable UTF-8 characters"
        )
    return key


def _answer(outcome: Outcome) -> web.Response:
    """200 delivered, 202 still ours to deliver, 502 failed for good."""
    body: dict[str, Any] = {"id": outcome.id, "status": outcome.status}
    if outcome.provider:
        body["provider"] = outcome.provider
    if outcome.duplicate:
        body["duplicate"] = True
    if outcome.status in ("sent", "captured"):
        return web.json_response(body)
    if outcome.status == "queued":
        return web.json_response(body, status=202)
    if outcome.error is not None:
        raise outcome.error
    if outcome.status == "expired":
        raise RequestError("message_expired", "this message expired before it was delivered", 502)
    raise RequestError("provider_rejected", "an identical earlier request failed to deliver", 502)


async def _send(request: web.Request, channel: Channel, seen: dict[str, Any]) -> web.Response:
    authorize(request)
    services = request.app[SERVICES]
    data = await _read_json(request)  # read first: closing on an unread body resets the client
    if not services.outbox.accepting:
        # Come back after the listener has closed: by then another instance takes it.
        after = request.app[CONFIG].server.drain_seconds + 1
        raise RequestError(
            "shutting_down", "the service is shutting down; retry shortly", 503, after
        )
    send_request = parse_request(data)
    seen["type"] = send_request.type
    idempotency_key = _idempotency_key(request)
    message = services.composer.compose(channel, send_request)
    seen["id"], seen["to"] = message.id, mask_recipient(message.to)
    ttl = services.config.delivery.ttl_seconds
    if send_request.ttl is not None:
        ttl = min(ttl, send_request.ttl)
    outcome = await services.outbox.submit(
        message, ttl=ttl, idempotency_key=idempotency_key, admit=services.limiter.check
    )
    seen["id"] = outcome.id  # a repeat answers with the first message's id
    seen["outcome"], seen["duplicate"] = outcome.status, outcome.duplicate or None
    return _answer(outcome)


async def _counted(request: web.Request, channel: Channel) -> web.Response:
    """Answer a send request; count it and log one line for it, whatever the answer."""
    metrics = request.app[SERVICES].metrics
    seen: dict[str, Any] = {}
    try:
        response = await _send(request, channel, seen)
    except OtpServiceError as exc:
        metrics.request(channel, seen.get("type"), exc.status)
        if exc.code == "rate_limited":
            metrics.refused_by_limit(getattr(exc, "rule", "") or "other")
        event(
            log, logging.INFO if exc.status < 500 else logging.WARNING,
            "request refused" if exc.status < 500 else "request failed",
            channel=channel, http_status=exc.status, code=exc.code, **seen,
        )  # fmt: skip
        raise
    metrics.request(channel, seen.get("type"), response.status)
    event(
        log, logging.INFO, "request accepted", channel=channel, http_status=response.status, **seen
    )
    return response


async def send_email(request: web.Request) -> web.Response:
    return await _counted(request, "email")


async def send_sms(request: web.Request) -> web.Response:
    return await _counted(request, "sms")


def create_app(config: Config, library: TemplateLibrary | None = None) -> web.Application:
    """The aiohttp application; providers are opened on start-up and closed on clean-up."""
    app = web.Application(
        middlewares=[request_id_middleware, errors_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG] = config
    app[SERVICES] = services = build_services(config, library)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        await services.start()
        yield
        await services.stop()

    async def stop_accepting(app: web.Application) -> None:
        services.outbox.accepting = False  # readiness fails while in-flight requests finish
        await services.inbox.close()  # live streams and waits end now, not at the timeout

    app.on_shutdown.append(stop_accepting)

    app.cleanup_ctx.append(services_ctx)
    app.router.add_post("/v1/email", send_email)
    app.router.add_post("/v1/sms", send_sms)
    inbox_api.add_routes(app)
    inbox_page.add_routes(app)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/openapi.json", ops.openapi_json)
    return app
