"""The capture inbox as a live web page: plain HTML, CSS and JavaScript from ``static/``.

The page itself holds no message: it is served without a token and reads everything from the
JSON API and its event stream with ``Authorization: Bearer <token>`` (asked for once, kept in
the browser session). Its Content-Security-Policy allows only its own script and API; an email
previewed in the page's sandboxed frame inherits the policy, so it cannot load anything either.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from .inbox_api import capture_only

_FILES = {
    "/inbox": ("inbox.html", "text/html"),
    "/inbox/inbox.js": ("inbox.js", "text/javascript"),
    "/inbox/inbox.css": ("inbox.css", "text/css"),
}

# Inline styles are allowed for the emails' own styling; images only as data: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def add_routes(app: web.Application) -> None:
    """Serve the page's files (read once, here: a missing file fails at start-up); 404 where
    the inbox's API does not exist (nothing captured, no ``capture.api``)."""
    for path, (name, content_type) in _FILES.items():
        body = _read(name)

        async def serve(
            request: web.Request, body: bytes = body, content_type: str = content_type
        ) -> web.Response:
            return web.Response(
                body=body, content_type=content_type, charset="utf-8", headers=_HEADERS
            )

        app.router.add_get(path, capture_only(app, serve))
