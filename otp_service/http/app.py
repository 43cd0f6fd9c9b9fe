"""The HTTP layer: parse, authenticate, validate, call the domain, map errors to JSON.

Paths: ``POST /v1/email``, ``POST /v1/sms`` (Logto's HTTP connectors), other identity systems' hooks
(:mod:`.hooks`: ``/v1/hooks/<system>/<channel>``, when configured), the capture inbox
(:mod:`.inbox_api`: ``/v1/messages...``), its page (:mod:`.inbox_page`: ``/inbox``); the
operators' endpoints (probes, metrics, ``/openapi.json``) are in :mod:`.ops`. Every route has
an entry in :mod:`.openapi`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..config import Config
from ..delivery.outcome import Outcome
from ..errors import OtpServiceError, RequestError
from ..logs import event
from ..message.compose import Channel, parse_request
from ..message.templates import TemplateLibrary
from ..services import build_services
from ..text.sanitize import has_control
from . import hooks, inbox_api, inbox_page, ops
from .access_log import request_id_middleware
from .answers import (
    answer,
    error_answer,
    http_error_answer,
    http_status,
    internal_error_answer,
)
from .body import read_json as _read_json
from .context import CONFIG, SERVICES, authorize
from .headers import add_security_headers

__all__ = ["CONFIG", "SERVICES", "create_app"]

log = logging.getLogger("otp_service.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"error": {"code", "message"}}``; nothing leaks."""
    try:
        return await handler(request)
    except OtpServiceError as exc:
        return error_answer(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_answer(exc)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return internal_error_answer()


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > 255 or has_control(key):
        raise RequestError(
            "invalid_header_value", "Idempotency-Key must be 1 to 255 printable UTF-8 characters"
        )
    return key


async def _outcome(request: web.Request, channel: Channel) -> Outcome:
    """Translate the Logto connector request into the send path's input, and send it."""
    try:
        authorize(request)
        data = await _read_json(request)  # read first: closing on an unread body resets the client
        send_request = parse_request(data)
        idempotency_key = _idempotency_key(request)
    except RequestError as exc:
        return Outcome(channel, "refused", error=exc)
    return await request.app[SERVICES].sender.send(
        channel, send_request, idempotency_key=idempotency_key
    )


async def _send(request: web.Request, channel: Channel) -> web.Response:
    """Answer a send request; count it and log one line for it, whatever the answer."""
    outcome = await _outcome(request, channel)
    status = http_status(outcome)
    request.app[SERVICES].metrics.request(channel, outcome.type, status)
    if status < 400:
        level, name = logging.INFO, "request accepted"
    else:
        level = logging.INFO if status < 500 else logging.WARNING
        name = "request refused" if status < 500 else "request failed"
    if log.isEnabledFor(level):
        event(log, level, name, http_status=status, **outcome.log_fields())
    return answer(outcome)


async def send_email(request: web.Request) -> web.Response:
    return await _send(request, "email")


async def send_sms(request: web.Request) -> web.Response:
    return await _send(request, "sms")


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
    app.on_response_prepare.append(add_security_headers)

    app.cleanup_ctx.append(services_ctx)
    app.router.add_post("/v1/email", send_email)
    app.router.add_post("/v1/sms", send_sms)
    hooks.add_routes(app)
    inbox_api.add_routes(app)
    inbox_page.add_routes(app)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/openapi.json", ops.openapi_json)
    return app
