"""The headers every answer carries, set in one place for every route.

``X-Content-Type-Options: nosniff``: the JSON answers carry captured mail (its HTML, its
subject, whatever a template or a client put there); a browser that sniffed such an answer as
HTML would run it on the service's origin. With ``nosniff`` it is only ever read as what its
``Content-Type`` says. Set on ``on_response_prepare`` rather than in a middleware, so that answers
a middleware never sees (the router's 404 and 405, an event stream prepared by its handler, an
error raised past the middlewares) carry it too; the raw refusal written past
``server.max_connections`` (:mod:`.connections`) adds :data:`SECURITY_HEADERS` itself.
"""

from __future__ import annotations

from aiohttp import web

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


async def add_security_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: add :data:`SECURITY_HEADERS` (a handler's own value of the
    same header is kept)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
