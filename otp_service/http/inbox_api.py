"""The capture inbox over HTTP: list, read, delete, wait for the latest, and a live stream.

``GET /v1/messages``, ``GET|DELETE /v1/messages/{id}``, ``DELETE /v1/messages[?to=]``,
``GET /v1/messages/latest?to=&channel=&type=&since=&wait=`` and ``GET /v1/messages/events``
(Server-Sent Events for the live page). Every handler checks the token and only translates:
the inbox (:mod:`otp_service.store.inbox`) does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from ..errors import RequestError, ShuttingDownError
from ..message.compose import Message, normalize_to
from ..store import InboxEvent, InboxQuery, StoredStatus, UnknownMessage
from ..text.segments import analyse
from .context import CONFIG, SERVICES, authorize

MAX_WAIT_SECONDS = 60.0
PING_SECONDS = 15.0  # a comment line on an idle stream: proxies keep it, dead readers show


def _headers(message: Message) -> list[list[str]]:
    """The email headers to show: the received ones (SMTP intake), else those the message has."""
    if message.headers:
        return [[name, value] for name, value in message.headers.items()]
    sender = message.send_from or ""
    domain = sender.rpartition("@")[2].strip("> ") or "capture.invalid"
    pairs = [
        ("From", sender or "(the email provider's From when sent)"),
        ("To", message.to),
        ("Reply-To", message.reply_to or ""),
        ("Subject", message.subject or ""),
        ("Date", format_datetime(message.created_at)),
        ("Message-ID", f"<{message.id}@{domain}>"),
    ]
    return [[name, value] for name, value in pairs if value]


def message_json(message: Message) -> dict[str, Any]:
    """A captured message as the API shows it."""
    sms = None
    if message.channel == "sms":
        encoding = analyse(message.text)
        sms = {
            "encoding": encoding.encoding,
            "units": encoding.units,
            "segments": encoding.segments,
        }
    return {
        "id": message.id,
        "channel": message.channel,
        "to": message.to,
        "type": message.type,
        # The system that asked: logto (its HTTP contract, or `send`), smtp, supabase, ...
        "source": message.source or "logto",
        "locale": message.locale,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "code": message.code,
        "link": message.link,
        "status": "captured",
        "created_at": message.created_at.isoformat(),
        "headers": _headers(message) if message.channel == "email" else [],
        "sms": sms,
    }


def _recipient(request: web.Request) -> str | None:
    to = request.query.get("to") or None
    if to is None:
        return None
    return normalize_to(to, request.app[CONFIG].sms.default_region)


def _query(request: web.Request) -> InboxQuery:
    channel = request.query.get("channel") or None
    if channel not in (None, "email", "sms"):
        raise RequestError("invalid_query", "channel must be email or sms")
    return InboxQuery(_recipient(request), channel, request.query.get("type") or None)


def _number(request: web.Request, name: str, default: str, low: float, high: float) -> float:
    raw = request.query.get(name, default)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also refuses nan
        raise RequestError("invalid_query", f"{name} must be a number from {low:g} to {high:g}")
    return value


async def list_messages(request: web.Request) -> web.Response:
    authorize(request)
    query = _query(request)
    raw_limit = request.query.get("limit", "50")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= 1000:
        raise RequestError("invalid_query", "limit must be a number from 1 to 1000")
    found = await request.app[SERVICES].inbox.list(query, int(raw_limit))
    return web.json_response({"messages": [message_json(m) for m in found]})


def _status_json(status: StoredStatus) -> dict[str, Any]:
    return {
        "id": status.id,
        "channel": status.channel,
        "to": status.to,
        "type": status.type,
        "status": status.status,
        "provider": status.provider,
        "created_at": _iso(status.created_at),
        "expires_at": _iso(status.expires_at),
        "finished_at": _iso(status.finished_at) if status.finished_at else None,
        "error": status.last_error,
        "attempts": [
            {
                "at": _iso(a.at),
                "provider": a.provider,
                "outcome": a.outcome,
                "error": a.error,
                "provider_id": a.provider_id,
            }
            for a in status.attempts
        ],
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


async def get_message(request: web.Request) -> web.Response:
    """Any message's status and attempts; the body and code only for captured messages."""
    authorize(request)
    services = request.app[SERVICES]
    message_id = request.match_info["id"]
    captured = await services.inbox.get(message_id)
    stored = await services.store.status(message_id)
    if stored is None and captured is None:
        raise RequestError("message_not_found", "no message with this id", 404)
    body: dict[str, Any] = message_json(captured) if captured is not None else {}
    if stored is not None:
        body.update(_status_json(stored))
    return web.json_response(body)


async def delete_message(request: web.Request) -> web.Response:
    """Delete one captured message."""
    authorize(request)
    if not await request.app[SERVICES].inbox.delete(request.match_info["id"]):
        raise RequestError("message_not_found", "no captured message with this id", 404)
    return web.json_response({"deleted": 1})


async def clear_messages(request: web.Request) -> web.Response:
    """Empty the inbox (or one recipient's part of it) and start that recipient afresh: its
    abuse-limit counts and duplicate suppression are reset too."""
    authorize(request)
    services = request.app[SERVICES]
    to = _recipient(request)
    deleted = await services.inbox.clear(to)
    await services.limiter.reset(to)
    await services.outbox.forget_duplicates(to)
    return web.json_response({"deleted": deleted})


_SINCE = "an RFC 3339 time (e.g. 2026-11-27T13:00:00Z) or the id of a captured message"


def _since(request: web.Request) -> tuple[datetime | None, str | None]:
    """``since``: an RFC 3339 time (it has a colon), else the id of a captured message."""
    raw = request.query.get("since") or None
    if raw is None:
        return None, None
    if ":" not in raw:
        return None, raw
    try:  # a "+" left unencoded in a query string arrives as a space
        when = datetime.fromisoformat(raw.replace(" ", "+").replace("z", "Z"))
    except ValueError:
        raise RequestError("invalid_query", f"since must be {_SINCE}") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), None


async def latest_message(request: web.Request) -> web.Response:
    """The newest matching message; with ``wait``, the first to arrive within that many s."""
    authorize(request)
    query = _query(request)
    since, after = _since(request)
    wait = _number(request, "wait", "0", 0, MAX_WAIT_SECONDS)
    inbox = request.app[SERVICES].inbox
    try:
        if wait <= 0:
            found = await inbox.latest(query, since=since, after=after)
        else:
            async with asyncio.timeout(wait):
                found = await inbox.wait(query, since=since, after=after)
            if found is None:  # the inbox closed under us
                raise ShuttingDownError(1)
    except UnknownMessage:
        raise RequestError(
            "invalid_query", f"since names no captured message: it takes {_SINCE}"
        ) from None
    except TimeoutError:
        found = None
    if found is None:
        waited = f" within {wait:g} s" if wait > 0 else ""
        raise RequestError("message_not_found", f"no matching message{waited}", 404)
    return web.json_response(message_json(found))


def _event_bytes(event: InboxEvent) -> bytes:
    data: dict[str, Any] = {}
    if event.message is not None:
        data = message_json(event.message)
    elif event.id is not None:
        data = {"id": event.id}
    elif event.kind == "cleared":
        data = {"to": event.to}
    return f"event: {event.kind}\ndata: {json.dumps(data)}\n\n".encode()


async def message_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``ready`` once subscribed, then ``added``, ``deleted``, ``cleared``.

    Read it with ``fetch`` (it sends the token as a header, which ``EventSource`` cannot).
    """
    authorize(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    await response.prepare(request)
    events = request.app[SERVICES].inbox.events()
    try:
        await _pump(events, response)
    finally:
        await events.aclose()
    return response


async def _pump(events: AsyncIterator[InboxEvent], response: web.StreamResponse) -> None:
    """Copy events to the response, with a ping while idle, until either side ends."""
    pending: asyncio.Future[InboxEvent] = asyncio.ensure_future(anext(events))
    try:
        while True:
            done, _ = await asyncio.wait((pending,), timeout=PING_SECONDS)
            try:
                if not done:
                    await response.write(b": ping\n\n")
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:  # the inbox closed, or this reader fell behind
                    return
                await response.write(_event_bytes(event))
            except ConnectionError:  # the reader went away
                return
            pending = asyncio.ensure_future(anext(events))
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending


def add_routes(app: web.Application) -> None:
    # The fixed paths first: they would otherwise match /v1/messages/{id}.
    app.router.add_get("/v1/messages", list_messages)
    app.router.add_delete("/v1/messages", clear_messages)
    app.router.add_get("/v1/messages/latest", latest_message)
    app.router.add_get("/v1/messages/events", message_events)
    app.router.add_get("/v1/messages/{id}", get_message)
    app.router.add_delete("/v1/messages/{id}", delete_message)
