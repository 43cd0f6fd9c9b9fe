"""Reading a request body within the server's bounds: size, time, media type, JSON shape."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ..errors import RequestError
from ..text.sanitize import json_problem, json_text_may_hold_problem
from .context import CONFIG


def is_json(request: web.Request) -> bool:
    return request.content_type == "application/json" or request.content_type.endswith("+json")


async def read_body(request: web.Request) -> bytes:
    """The raw body: 413 past ``server.max_body_bytes``, 408 when it trickles in too slowly."""
    server = request.app[CONFIG].server
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestError("payload_too_large", f"the body exceeds {limit} bytes", 413)
    # A body already all here (the usual small one) is read without arming a timer.
    arrived = request.content.is_eof()
    try:
        async with asyncio.timeout(None if arrived else server.header_timeout_seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError("payload_too_large", f"the body exceeds {limit} bytes", 413) from None
    except TimeoutError:  # a client trickling its body holds a connection: not for long
        raise RequestError("request_timeout", "the body did not arrive in time", 408) from None


def decode_json(body: bytes, charset: str | None) -> Any:
    """``body`` as JSON: 400 ``invalid_json``, or ``invalid_request`` for text that cannot be
    taken (a lone surrogate, absurd nesting)."""
    try:
        text = body.decode(charset or "utf-8")
        data = json.loads(text)
    except (ValueError, LookupError, RecursionError):  # RecursionError: absurdly deep nesting
        raise RequestError("invalid_json", "the body is not valid JSON") from None
    # Checked before anything is composed or stored: such text fails wherever it goes next.
    if json_text_may_hold_problem(text) and (problem := json_problem(data)) is not None:
        raise RequestError("invalid_request", f"the body cannot be accepted: {problem}")
    return data


def require_json(request: web.Request) -> None:
    if not is_json(request):
        raise RequestError("unsupported_media_type", "send Content-Type: application/json", 415)


async def read_json(request: web.Request) -> Any:
    """A JSON body (Content-Type checked first, then size and time bounds, then the JSON)."""
    require_json(request)
    return decode_json(await read_body(request), request.charset)
