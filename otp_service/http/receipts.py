"""Delivery receipts over HTTP: the routes providers call back.

``GET|POST /v1/receipts/vonage`` (Vonage's DLR, as a query, a form or JSON), ``POST
/v1/receipts/twilio`` (Twilio's status callback, a signed form), ``POST /v1/receipts/aliyun``
(Aliyun's SmsReport push, a JSON array, with ``?token=``). These routes take no bearer token:
each provider authenticates by its own means (Vonage's signature when ``signatureSecret`` is
set, Twilio's ``X-Twilio-Signature``, the push token for Aliyun), checked in ``providers/``. A
refused receipt never reaches the store; every receipt, taken or refused, is counted
(``otp_sms_receipts``). The handlers only translate: :class:`ReceiptDesk` does the work.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from aiohttp import web

from ..config.twilio import TwilioConfig
from ..config.vonage import VonageConfig
from ..errors import ReceiptRefused
from ..providers import aliyun_receipts, twilio_receipts, vonage_receipts
from ..store.receipts import Receipt
from .context import CONFIG, SERVICES

# The answer per result of ReceiptDesk.take: a receipt for no message we know may be early
# (it raced our own record of the send): 404 makes a provider that retries bring it again.
_TAKEN = {
    "accepted": (200, None),
    "duplicate": (200, None),
    "unmatched": (404, ("receipt_unmatched", "no message carries this provider id")),
    "mismatch": (403, ("receipt_mismatch", "this receipt names another number")),
}


def _refused(exc: ReceiptRefused, request: web.Request) -> web.Response:
    request.app[SERVICES].metrics.receipt(exc.provider, exc.code.removeprefix("receipt_"))
    return web.json_response(
        {"error": {"code": exc.code, "message": exc.message}}, status=exc.status
    )


async def _body(request: web.Request, provider: str) -> bytes:
    limit = request.app[CONFIG].server.max_body_bytes
    try:
        async with asyncio.timeout(request.app[CONFIG].server.header_timeout_seconds):
            return await request.read()
    except (web.HTTPRequestEntityTooLarge, TimeoutError):
        raise ReceiptRefused(
            provider, "receipt_invalid", f"send at most {limit} bytes, in time", status=400
        ) from None


async def _json(request: web.Request, provider: str) -> Any:
    body = await _body(request, provider)
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ReceiptRefused(
            provider, "receipt_invalid", "the body is not valid JSON", status=400
        ) from None


async def _vonage_params(request: web.Request) -> dict[str, str]:
    """A DLR's parameters, however the account sends them (GET, form POST, JSON POST)."""
    if request.method == "GET":
        return dict(request.query)
    if request.content_type == "application/json":
        data = await _json(request, "vonage")
        if not isinstance(data, dict):
            raise ReceiptRefused("vonage", "receipt_invalid", "send a JSON object", status=400)
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}
    await _body(request, "vonage")
    return {k: str(v) for k, v in (await request.post()).items() if isinstance(v, str)}


def _configured(request: web.Request, provider: str) -> None:
    if provider not in request.app[CONFIG].sms.provider_names:
        raise ReceiptRefused(
            provider, "receipt_not_configured", f"{provider} sends no SMS here", status=404
        )


async def _take(request: web.Request, receipts: list[Receipt]) -> tuple[int, Any]:
    """Apply each receipt; the answer of the last one that was not taken, if any."""
    desk = request.app[SERVICES].outbox.receipts
    assert desk is not None  # wired with the services
    answer: tuple[int, Any] = (200, None)
    for receipt in receipts:
        status, error = _TAKEN[await desk.take(receipt)]
        if error is not None:
            answer = (status, error)
    return answer


async def vonage_receipt(request: web.Request) -> web.Response:
    """Vonage's delivery receipt: 204 once taken (also a repeat), as Vonage expects 2xx."""
    try:
        _configured(request, "vonage")
        config = request.app[CONFIG].sms.section(VonageConfig)
        assert config is not None  # a configured provider has its section
        receipt = vonage_receipts.read_receipt(await _vonage_params(request), config)
    except ReceiptRefused as exc:
        return _refused(exc, request)
    status, error = await _take(request, [receipt])
    if error is not None:
        return web.json_response({"error": {"code": error[0], "message": error[1]}}, status=status)
    return web.Response(status=204)


async def twilio_status(request: web.Request) -> web.Response:
    """Twilio's status callback, signed with the account's auth token: 204 once taken. The
    signature covers the URL Twilio called: ``server.public_url`` and the path (behind a proxy
    the URL we see is another)."""
    try:
        _configured(request, "twilio")
        config = request.app[CONFIG].sms.section(TwilioConfig)
        assert config is not None  # a configured provider has its section
        await _body(request, "twilio")
        params = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        base = request.app[CONFIG].server.public_url
        url = f"{base}{request.path_qs}" if base else str(request.url)
        signature = request.headers.get("X-Twilio-Signature")
        receipt = twilio_receipts.read_receipt(url, params, signature, config)
    except ReceiptRefused as exc:
        return _refused(exc, request)
    status, error = await _take(request, [receipt])
    if error is not None:
        return web.json_response({"error": {"code": error[0], "message": error[1]}}, status=status)
    return web.Response(status=204)


def _aliyun_token(request: web.Request) -> None:
    token = request.app[CONFIG].sms.aliyun_report_token
    if token is None:
        raise ReceiptRefused(
            "aliyun", "receipt_not_configured", "set sms.aliyun_report_token", status=404
        )
    given = request.query.get("token", "")
    if not given:
        raise ReceiptRefused("aliyun", "receipt_unsigned", "the URL carries no token")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ReceiptRefused("aliyun", "receipt_forged", "the URL's token does not match")


async def aliyun_reports(request: web.Request) -> web.Response:
    """Aliyun's SmsReport push: ``{"code": 0}`` once taken. A report for no message we
    know is counted and skipped: the batch is answered 200 all the same (Aliyun would push
    the whole batch again)."""
    try:
        _configured(request, "aliyun")
        _aliyun_token(request)
        receipts = aliyun_receipts.from_push(await _json(request, "aliyun"))
    except ReceiptRefused as exc:
        return _refused(exc, request)
    await _take(request, receipts)
    return web.json_response({"code": 0, "msg": "OK"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/receipts/vonage", vonage_receipt)
    app.router.add_post("/v1/receipts/vonage", vonage_receipt)
    app.router.add_post("/v1/receipts/aliyun", aliyun_reports)
    app.router.add_post("/v1/receipts/twilio", twilio_status)
