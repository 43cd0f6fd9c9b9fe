"""The CPU reference for capture mode: ``python -m bench.reference_app --port P``.

A minimal aiohttp application that does what any JSON endpoint must: parse Logto's body,
check its shape and answer with a small JSON object, nothing else (no store, no templates, no
logs, no metrics). The ``cpu`` scenario divides the service's CPU per captured request by this
one's, measured back to back on the same machine.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web


async def email(request: web.Request) -> web.Response:
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("to"), str):
        return web.json_response({"error": "invalid_request"}, status=400)
    payload = body.get("payload")
    code = payload.get("code") if isinstance(payload, dict) else None
    answer = {"status": "captured", "to": body["to"], "type": body.get("type"), "code": code}
    return web.Response(text=json.dumps(answer), content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/email", email)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
