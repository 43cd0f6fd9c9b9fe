"""Request ids and the access log (``serve --access-log``), with personal data masked.

Every request gets an id: the caller's ``X-Request-Id`` when it is a short plain token, else a
new one. It is answered in ``X-Request-Id`` and carried by every log line the request causes,
including those of the delivery it started. The access log names the path and the query keys,
but a recipient in ``?to=`` is masked and every other query value is hidden unless it is one of
the few harmless ones (``channel``, ``limit``): a token pasted into a URL never reaches a log.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..logs import event, mask_recipient, request_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEADER = "X-Request-Id"
_GIVEN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SHOWN_VALUES = frozenset({"channel", "limit"})
_NUMBER = re.compile(r"^\+?[\d .()-]{7,}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, for its log lines and the ``X-Request-Id`` answer header."""
    given = request.headers.get(HEADER, "")
    rid = given if _GIVEN_ID.match(given) else secrets.token_hex(8)
    token = request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[HEADER] = rid
        raise
    finally:
        request_id.reset(token)
    response.headers[HEADER] = rid
    return response


def masked_path(path: str) -> str:
    """The path with any segment that looks like an address or a phone number masked."""
    return "/".join(
        mask_recipient(part) if "@" in part or _NUMBER.match(part) else part
        for part in path.split("/")
    )


def masked_query(request: web.BaseRequest) -> str:
    """The query string with ``to`` masked and values other than harmless ones hidden."""
    parts = []
    for key, value in request.query.items():
        if key == "to":
            shown = mask_recipient(value)
        elif key in _SHOWN_VALUES and value.isascii() and value.isalnum() and len(value) <= 16:
            shown = value
        else:
            shown = "***"
        parts.append(f"{quote(key[:32], safe='')}={quote(shown, safe='@*+')}")
    return "&".join(parts)


class AccessLogger(AbstractAccessLogger):
    """One ``http`` event per request: method, path, masked query, status, size, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = response.headers.get(HEADER)
        event(
            self.logger, logging.INFO, "http",
            request_id=rid, method=request.method, path=masked_path(request.path),
            query=masked_query(request) or None, status=response.status,
            bytes=response.body_length, ms=round(time * 1000, 1), peer=request.remote,
        )  # fmt: skip
