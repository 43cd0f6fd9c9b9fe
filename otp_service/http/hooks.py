"""``POST /v1/hooks/<system>/<channel>``: other identity systems' hooks, each a translator.

Only configured systems get routes (``intakes.<system>`` in the config); any other path under
``/v1/hooks/`` answers 404 like an unknown path. Each request: read the body within the server's
bounds; :meth:`~otp_service.intake.hook.Hook.verify` it (401, nothing stored); decode the JSON;
:meth:`~otp_service.intake.hook.Hook.parse` it into deliveries; send each through the one send
path (:class:`~otp_service.delivery.send.SendPath`), with its replay key turned into an
idempotency key; answer as the system expects (:meth:`~otp_service.intake.hook.Hook.reply`,
else the house table :mod:`.answers`). One log line and one ``otp_intake_requests`` count per
request, labelled with the system's name. The hooks themselves are :mod:`otp_service.intake`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from ..delivery.outcome import Outcome
from ..errors import RequestError
from ..intake.hook import Delivery, Hook, Inbound, Reply, Verdict, worst
from ..intake.registry import configured
from ..logs import event
from ..message.compose import Channel
from .answers import answer, http_status, problem
from .body import decode_json, is_json, read_body
from .context import CONFIG, SERVICES

log = logging.getLogger("otp_service.web")
FORM = "application/x-www-form-urlencoded"


def add_routes(app: web.Application) -> list[Hook]:
    """A route per configured hook and channel; returns the hooks."""
    hooks = configured(app[CONFIG].intakes)
    for hook in hooks:
        for channel in hook.channels:
            app.router.add_post(f"/v1/hooks/{hook.name}/{channel}", _handler(hook, channel))
    return hooks


def _handler(hook: Hook, channel: Channel) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await _answer(request, hook, channel)

    handle.__name__ = f"hook_{hook.name}_{channel}"
    return handle


def verdict(outcome: Outcome) -> Verdict:
    """How the house table answers ``outcome``."""
    status = http_status(outcome)
    if outcome.error is None or status < 400:
        return Verdict(outcome, status)
    status, code, message, retry_after = problem(outcome.error)
    seconds = None if retry_after is None else max(1, math.ceil(retry_after))
    return Verdict(outcome, status, code, message, seconds)


async def _deliveries(request: web.Request, hook: Hook, channel: Channel) -> list[Delivery]:
    """Read, verify, decode and parse: the hook's deliveries, or a :class:`RequestError`."""
    form = hook.form_encoded and request.content_type == FORM
    if not form and not is_json(request):
        raise RequestError("unsupported_media_type", "send Content-Type: application/json", 415)
    body = await read_body(request)  # read first: closing on an unread body resets the client
    inbound = Inbound(request.headers, body, request.content_type)
    hook.verify(inbound, time.time())
    if form:
        try:
            data = dict(parse_qsl(body.decode(request.charset or "utf-8"), strict_parsing=True))
        except (ValueError, LookupError):
            raise RequestError("invalid_request", "the body is not a valid form") from None
    else:
        data = decode_json(body, request.charset)
    return hook.parse(channel, data, inbound)


def _idempotency_key(hook: Hook, delivery: Delivery, secret: bytes) -> str | None:
    """The send path's key for a delivery's replay key: an HMAC under the store's secret (a
    body holds the code, which a bare hash would give back), named for the hook."""
    raw = delivery.replay_key
    if raw is None:
        return None
    material = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    digest = hmac.new(secret, material, hashlib.sha256).hexdigest()
    return f"hook:{hook.name}:{digest}"


async def _outcomes(request: web.Request, hook: Hook, channel: Channel) -> list[Outcome]:
    try:
        deliveries = await _deliveries(request, hook, channel)
    except RequestError as exc:
        return [Outcome(channel, "refused", error=exc)]
    services = request.app[SERVICES]
    secret = services.store.dedupe_secret
    sends = [
        services.sender.send(
            d.channel,
            d.request,
            idempotency_key=_idempotency_key(hook, d, secret),
            wait_seconds=hook.wait_seconds,
        )
        for d in deliveries
    ]
    return list(await asyncio.gather(*sends))


def _response(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    return web.json_response(reply.body, status=reply.status, headers=reply.headers)


async def _answer(request: web.Request, hook: Hook, channel: Channel) -> web.Response:
    """Answer one hook request; count it and log one line per message it asked for."""
    outcomes = await _outcomes(request, hook, channel)
    if not outcomes:  # the hook asked for nothing (see Hook.parse): accepted as is
        return web.Response(status=204)
    verdicts = [verdict(o) for o in outcomes]
    reply = hook.reply(verdicts)
    first = worst(verdicts)
    response = _response(reply) if reply is not None else answer(first.outcome)
    metrics = request.app[SERVICES].metrics
    for each in verdicts:
        # The outcome's status in the house table (Supabase hears a refusal inside a 200).
        metrics.intake_request(hook.name, channel, each.outcome.type, each.status)
        level = logging.INFO if each.status < 500 else logging.WARNING
        name = (
            "request accepted"
            if each.ok
            else "request refused"
            if each.status < 500
            else ("request failed")
        )
        event(
            log, level, name, intake=hook.name, http_status=response.status,
            **each.outcome.log_fields(),
        )  # fmt: skip
    return response
