"""Delivery receipts over HTTP: ``GET|POST /v1/receipts/{provider}``, the routes providers
call back (docs/receipts.md has each provider's URL and how it proves itself).

These routes take no bearer token: each provider authenticates by its own means (a signature
over the URL and parameters, a token in the URL), checked by its receipt reader in
``providers/``. The handler only translates: the call as the wire brought it
(:class:`~otp_service.providers.base.Callback`) to the provider's reader, its receipts to
:class:`~otp_service.delivery.receipts.ReceiptDesk`. A refused receipt never reaches the store;
every receipt, taken or refused, is counted (``otp_sms_receipts``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ..errors import ReceiptRefused
from ..providers.base import Callback, ReceiptReader
from .context import CONFIG, SERVICES

FORM = "application/x-www-form-urlencoded"
# The answer per result of ReceiptDesk.take: a receipt for no message we know may be early
# (it raced our own record of the send): 404 makes a provider that retries bring it again.
_NOT_TAKEN = {
    "unmatched": (404, "receipt_unmatched", "no message carries this provider id"),
    "mismatch": (403, "receipt_mismatch", "this receipt names another number"),
}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _callback(request: web.Request, provider: str) -> Callback:
    """The call as it came: its body read within the limits every request has."""
    config = request.app[CONFIG].server
    try:
        async with asyncio.timeout(config.header_timeout_seconds):
            body = await request.read()
    except (web.HTTPRequestEntityTooLarge, TimeoutError):
        raise ReceiptRefused(
            provider, "receipt_invalid", f"send at most {config.max_body_bytes} bytes, in time",
            status=400,
        ) from None  # fmt: skip
    form: dict[str, str] = {}
    data: Any = None
    if body and request.content_type == FORM:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    elif body and request.content_type.endswith("json"):
        try:
            data = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ReceiptRefused(
                provider, "receipt_invalid", "the body is not valid JSON", status=400
            ) from None
    # Signatures cover the URL the provider called: behind a proxy that is the public one.
    base = config.public_url
    url = f"{base}{request.path_qs}" if base else str(request.url)
    return Callback(request.method, url, dict(request.query), form, data, dict(request.headers))


async def receipt(request: web.Request) -> web.StreamResponse:
    """Take a provider's receipts: its reader's answer (204, or the body it wants) once
    taken, also a repeat; 4xx with a stable code when refused."""
    services = request.app[SERVICES]
    provider = request.match_info["provider"]
    reader: ReceiptReader | None = services.receipt_readers.get(provider)
    if reader is None:
        name = provider if provider in request.app[CONFIG].sms.provider_names else "other"
        services.metrics.receipt(name, "not_configured")
        return _error(404, "receipt_not_configured", "no SMS provider here by this name")
    try:
        receipts = reader.read(await _callback(request, provider))
    except ReceiptRefused as exc:
        services.metrics.receipt(exc.provider, exc.code.removeprefix("receipt_"))
        return _error(exc.status, exc.code, exc.message)
    desk = services.outbox.receipts
    assert desk is not None  # wired with the services
    refused = None
    for one in receipts:
        result = await desk.take(one)
        refused = _NOT_TAKEN.get(result, refused)
    if refused is not None and not reader.batched:
        return _error(*refused)
    if reader.answer is None:
        return web.Response(status=204)
    return web.json_response(reader.answer)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/receipts/{provider}", receipt)
    app.router.add_post("/v1/receipts/{provider}", receipt)
