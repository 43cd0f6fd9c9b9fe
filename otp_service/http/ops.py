"""Endpoints for operators: probes, metrics and the OpenAPI document.

``/healthz`` (liveness) and ``/readyz`` (readiness, with the store's state and each provider's
last outcome) need no token; ``/metrics`` needs the API token, unless it is served on its own
port (``server.metrics_port``) by :func:`create_metrics_app` for a scraper inside the cluster.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..intake.registry import configured
from ..metrics import CONTENT_TYPE
from ..store import StoreUnavailable
from .context import CONFIG, SERVICES, AppServices, authorize
from .openapi import document

log = logging.getLogger("otp_service.web")
STORE_CHECK_SECONDS = 2.0


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 while shutting down or while the store does not answer."""
    services = request.app[SERVICES]
    store: dict[str, Any]
    try:
        if not services.store.healthy:  # it cannot take a durable write right now
            raise StoreUnavailable("the store cannot take a durable write")
        async with asyncio.timeout(STORE_CHECK_SECONDS):
            pending, _ = await services.store.backlog()
        store = {"state": "ok", "pending": pending}
    except Exception as exc:  # whatever the backend raises, the answer is "not ready"
        store = {"state": "unavailable", "error": type(exc).__name__}
    providers: dict[str, Any] = {}
    for name in services.provider_names():
        state = services.metrics.providers.get(name)
        providers[name] = {
            "last_outcome": state.outcome if state else None,
            "at": datetime.fromtimestamp(state.at, UTC).isoformat() if state else None,
        }
    if not services.outbox.accepting:
        status = "shutting_down"
    elif store["state"] != "ok":
        status = "store_unavailable"
    else:
        status = "ready"
    body = {"status": status, "store": store, "providers": providers}
    if services.logto is not None:  # shown, but not a reason to stop sending: others serve
        body["logto_templates"] = services.logto.status().as_json()
    return web.json_response(body, status=200 if status == "ready" else 503)


async def _exposition(services: AppServices) -> web.Response:
    try:
        await services.outbox.observe()
    except Exception:  # the outbox gauges keep their last value; the rest is still served
        log.warning("metrics: cannot read the outbox backlog", exc_info=True)
    response = web.Response(body=services.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition; the same token as the API when tokens are configured."""
    authorize(request, "read")
    return await _exposition(request.app[SERVICES])


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API (no token: it holds no data)."""
    return web.json_response(document(configured(request.app[CONFIG].intakes)))


def create_metrics_app(services: AppServices) -> web.Application:
    """``GET /metrics`` alone, without a token, for a listener of its own."""

    async def scrape(request: web.Request) -> web.Response:
        return await _exposition(services)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
