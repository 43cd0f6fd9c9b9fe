"""The OpenAPI document matches the API: every route documented, every answer as documented.

The drift test compares the app's routes with ``otp_service/http/openapi.py``: a new endpoint
without a document entry fails here. The schemathesis run drives the running service process
from the document it serves (every operation, generated and negative inputs, with the token).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import hdrs

from otp_service.config import parse_config
from otp_service.config.registry import intake_names
from otp_service.http.app import create_app
from otp_service.http.openapi import PATHS, document
from otp_service.intake.registry import configured

from .support.command import Service
from .support.service import ClientFactory

ST = Path(sys.executable).parent / "st"
TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Every identity system's hook configured: their routes exist only then. Authentik and the
# generic hook take the token schemathesis sends, so its requests reach their parsers and the
# send path; Supabase, ZITADEL and Kratos sign or use credentials it cannot make (401).
INTAKES: dict[str, Any] = {
    "supabase": {"secrets": ["whsec_" + "c2VjcmV0LWtleS1mb3Itb3BlbmFwaS10ZXN0cw=="]},
    "authentik": {"tokens": [TOKEN]},
    "generic": {"tokens": [TOKEN]},
    "zitadel": {"signing_keys": ["zitadel-signing-key-0123456789"]},
    "kratos": {"basic_auth": {"user": "kratos", "password": "kratos-password-0123456789"}},
}


def app_routes(config: dict[str, Any]) -> set[tuple[str, str]]:
    app = create_app(parse_config(config))
    found = set()
    for route in app.router.routes():
        if route.method == hdrs.METH_HEAD:  # added by add_get, answered like GET
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        found.add((route.method, str(path)))
    return found


@pytest.mark.parametrize("config", [{}, {"intakes": INTAKES}], ids=["bare", "every_hook"])
def test_openapi_documents_every_route_and_only_routes(config: dict[str, Any]) -> None:
    """Each route of the app has an operation in the document, and each operation a route;
    the hook routes of the configured systems only."""
    paths = document(configured(parse_config(config).intakes))["paths"]
    documented = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert app_routes(config) == documented


def test_openapi_hook_routes_name_their_systems_schemes() -> None:
    """Each hook operation has its system's body and security schemes (defined, never the
    auth.tokens bearer: no scope applies) and documents 401 and 503."""
    assert set(INTAKES) == set(intake_names())  # a new system documents its routes (Hook.doc)
    served = document(configured(parse_config({"intakes": INTAKES}).intakes))
    schemes = served["components"]["securitySchemes"]
    hooks = {p: ops["post"] for p, ops in served["paths"].items() if p.startswith("/v1/hooks/")}
    assert {p.split("/")[3] for p in hooks} == set(intake_names())
    for path, op in hooks.items():
        named = {name for requirement in op["security"] for name in requirement}
        assert named and "bearer" not in named and named <= set(schemes), path
        assert {"401", "421", "503"} <= set(op["responses"]), path
        assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"


def test_openapi_every_operation_documents_its_errors() -> None:
    """Every operation has an id and a 2xx answer; every token-protected one documents 401."""
    for path, ops in PATHS.items():
        for method, op in ops.items():
            assert op.get("operationId"), (method, path)
            assert any(code.startswith("2") for code in op["responses"]), (method, path)
            if op.get("security", document()["security"]):
                assert "401" in op["responses"], (method, path)


def test_openapi_names_the_scope_of_every_token_protected_operation() -> None:
    """Each operation behind a token names the one scope it needs and documents its 403; every
    operation documents 421 (a Host the service is not reached by)."""
    served = document(configured(parse_config({"intakes": INTAKES}).intakes))
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            assert "421" in op["responses"], (method, path)
            if op.get("security", served["security"]) and not path.startswith("/v1/hooks/"):
                (scopes,) = [s["bearer"] for s in op["security"]]
                assert len(scopes) == 1 and scopes[0] in ("send", "read", "admin"), (method, path)
                assert "403" in op["responses"], (method, path)


async def test_openapi_served_at_openapi_json(service: ClientFactory) -> None:
    """GET /openapi.json answers the OpenAPI 3.1 document, without a token."""
    client = await service({"auth": {"tokens": [TOKEN]}, "intakes": INTAKES})
    response = await client.get("/openapi.json")
    assert response.status == 200
    served: dict[str, Any] = await response.json()
    hooks = configured(parse_config({"intakes": INTAKES}).intakes)
    assert served["openapi"].startswith("3.1") and served == document(hooks)


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(
    tmp_path: Path,
    services: list[Service],
) -> None:
    """schemathesis, from the served document with the token, sends generated and invalid
    requests to every operation of the running process: no 5xx, every status, content type
    and body as documented."""
    service = Service(tmp_path, {"auth": {"tokens": [TOKEN]}, "intakes": INTAKES})
    services.append(service)
    # The event stream never ends by itself: read its first event (ready) and close. A long
    # poll (latest?wait=) would make each case wait up to a minute: ask without waiting.
    (tmp_path / "schemathesis.toml").write_text(
        'max-stream-events = 1\n\n[[operations]]\ninclude-name = "GET /v1/messages/latest"\n'
        'parameters = { "wait" = 0 }\n',
        encoding="utf-8",
    )
    command = [
        str(ST), "run", f"{service.base}/openapi.json",
        "--header", f"Authorization: {AUTH['Authorization']}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--max-examples", "25", "--workers", "1", "--seed", "20261127",
        "--generation-database", "none", "--no-color",
        "--report-dir", str(tmp_path / "schemathesis"),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    hooks = configured(parse_config({"intakes": INTAKES}).intakes)
    operations = sum(len(ops) for ops in document(hooks)["paths"].values())
    # Every operation but GET /openapi.json, the document schemathesis reads its plan from.
    assert selected and selected[1] == selected[2] and int(selected[1]) >= operations - 1, output
    # Every case passed (the summary may warn that the signed hooks answered only 401: expected).
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed\s", output), output
    log = service.log()
    assert "Traceback" not in log and '"level": "ERROR"' not in log and TOKEN not in log
    assert '"event": "bad HTTP request refused"' in log  # schemathesis probes a NUL header
