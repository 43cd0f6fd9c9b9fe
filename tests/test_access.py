"""Least privilege over real HTTP: scoped tokens, the inbox routes only where something is
captured, and no answer to a Host the service is not reached by (DNS rebinding)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from otp_service.config import parse_config
from otp_service.config.checks import warnings
from otp_service.errors import ConfigError

from .support.fakes.aliyun import logto_aliyun_json
from .support.processes import smtp_email
from .support.service import ClientFactory
from .support.signin import signin
from .support.smtp_server import RecordingSMTPServer

SEND = "send-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
LEGACY = "legacy-token-0123456789abcdef"
TOKENS = [
    {"token": SEND, "scopes": ["send"]},
    {"token": READ, "scopes": ["read"]},
    {"token": ADMIN, "scopes": ["admin"]},
    LEGACY,
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(client: Any, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    async with client.request(method, path, headers=bearer(token), **kw) as response:
        assert response.headers["X-Content-Type-Options"] == "nosniff"  # 2xx, 403, 404 alike
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, None


async def test_scoped_token_does_only_what_its_scopes_say(service: ClientFactory) -> None:
    """send may only send, read only read (list, status, latest, events, metrics), admin only
    delete; a missing scope is 403 insufficient_scope, a wrong token still 401, a bare string
    may do everything."""
    client = await service({"auth": {"tokens": TOKENS}})
    body = {"json": signin("ana@example.com", "604217")}
    status, sent = await call(client, "POST", "/v1/email", SEND, **body)
    assert status == 200, sent
    mid = sent["id"]
    reads = [("GET", "/v1/messages"), ("GET", f"/v1/messages/{mid}"),
             ("GET", "/v1/messages/latest?to=ana@example.com"), ("GET", "/metrics")]  # fmt: skip
    deletes = [("DELETE", f"/v1/messages/{mid}"), ("DELETE", "/v1/messages?to=x@example.com")]
    for token, allowed in ((SEND, []), (READ, reads), (ADMIN, deletes)):
        for method, path in reads + deletes:
            status, answer = await call(client, method, path, token)
            if (method, path) in allowed:
                assert status == 200, (token, method, path, answer)
            else:
                assert status == 403, (token, method, path, answer)
                assert answer["error"]["code"] == "insufficient_scope"
                assert token not in str(answer)
    for token in (READ, ADMIN):
        status, answer = await call(client, "POST", "/v1/sms", token,
                                    json=signin("+33612345678", "604217"))  # fmt: skip
        assert (status, answer["error"]["code"]) == (403, "insufficient_scope")
    async with client.get("/v1/messages/events", headers=bearer(SEND)) as response:
        assert response.status == 403
    async with client.get("/v1/messages/events", headers=bearer(READ)) as response:
        assert response.status == 200 and b"event: ready" in await response.content.readline()
    status, answer = await call(client, "GET", "/v1/messages", "not-a-token-0123456789abcdef")
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    status, _ = await call(client, "POST", "/v1/email", LEGACY, **body)
    assert status == 200
    for method, path in [*reads, ("DELETE", "/v1/messages")]:
        assert (await call(client, method, path, LEGACY))[0] == 200, (method, path)


def test_token_scopes_are_checked_in_the_config() -> None:
    """An unknown or empty scope list, an unknown key, a short or repeated token: each named."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"auth": {"tokens": [
            {"token": SEND, "scopes": ["send", "write"]},
            {"token": READ, "scopes": []},
            {"token": ADMIN, "scopes": ["admin"], "role": "x"},
            {"token": "short", "scopes": ["send"]},
            SEND,
        ]}})  # fmt: skip
    paths = {problem.path for problem in caught.value.problems}
    assert paths == {"auth.tokens[0].scopes", "auth.tokens[1].scopes", "auth.tokens[2].role",
                     "auth.tokens[3].token", "auth.tokens[4]"}  # fmt: skip
    assert SEND not in str(caught.value) and READ not in str(caught.value)


def test_check_config_warns_when_every_token_has_every_scope() -> None:
    """Bare tokens only: a warning that tells to give Logto a send-only token; one scoped
    token is enough to silence it."""
    found = warnings(parse_config({"auth": {"tokens": [LEGACY, {"token": ADMIN,
                                   "scopes": ["send", "read", "admin"]}]}}))  # fmt: skip
    assert any(p.path == "auth.tokens" and "scopes: [send]" in p.fix for p in found)
    found = warnings(parse_config({"auth": {"tokens": TOKENS}}))
    assert not any(p.path == "auth.tokens" for p in found)
    assert not any(p.path == "auth.tokens" for p in warnings(parse_config({})))


def delivering(smtp_server: RecordingSMTPServer, **extra: Any) -> dict[str, Any]:
    """Email over SMTP, SMS through Aliyun: nothing captured."""
    return {
        "email": smtp_email(cast(Any, smtp_server)),
        "sms": {"provider": "aliyun", "aliyun": logto_aliyun_json()},
        "auth": {"tokens": [LEGACY]},
    } | extra


CAPTURE_ONLY = [("GET", "/v1/messages"), ("DELETE", "/v1/messages"),
                ("GET", "/v1/messages/latest"), ("GET", "/v1/messages/events"),
                ("DELETE", "/v1/messages/some-id"), ("GET", "/inbox"),
                ("GET", "/inbox/inbox.js")]  # fmt: skip


async def test_inbox_routes_are_404_when_nothing_is_captured(
    service: ClientFactory, smtp_server: RecordingSMTPServer
) -> None:
    """A service that delivers for real has no inbox API, stream, latest, deletes or page
    (404 like an unknown route, token or not); a message's status by id stays."""
    smtp_server.start()
    client = await service(delivering(smtp_server))
    status, sent = await call(client, "POST", "/v1/email", LEGACY,
                              json=signin("ana@example.com", "604217"))  # fmt: skip
    assert status in (200, 202), sent
    for method, path in CAPTURE_ONLY:
        status, answer = await call(client, method, path, LEGACY)
        assert status == 404, (method, path, answer)
        assert answer["error"]["code"] == "not_found"
    status, record = await call(client, "GET", f"/v1/messages/{sent['id']}", LEGACY)
    assert status == 200 and record["id"] == sent["id"] and "code" not in record


async def test_inbox_routes_exist_with_capture_api_true(
    service: ClientFactory, smtp_server: RecordingSMTPServer
) -> None:
    """capture.api: true (staging that delivers for real) serves the inbox routes anyway."""
    client = await service(delivering(smtp_server, capture={"api": True}))
    for method, path in CAPTURE_ONLY:
        if path == "/v1/messages/events":
            continue  # a stream: shown above to answer where the API exists
        status, answer = await call(client, method, path, LEGACY)
        code = (answer or {}).get("error", {}).get("code")  # latest, delete: none such yet
        assert status == 200 or code == "message_not_found", (method, path, answer)


async def test_inbox_routes_exist_when_only_the_smtp_intake_captures(
    service: ClientFactory, smtp_server: RecordingSMTPServer
) -> None:
    """The SMTP intake on: the inbox it fills can be read."""
    client = await service(delivering(smtp_server, capture={"smtp": {"port": 0}}))
    assert (await call(client, "GET", "/v1/messages", LEGACY))[0] == 200


LOOPBACK_HOSTS = [
    ("localhost:8787", True),
    ("127.0.0.1:8787", True),
    ("127.8.9.10", True),
    ("[::1]:8787", True),
    ("app.localhost:8787", True),
    ("LOCALHOST.", True),
    ("evil.example:8787", False),
    ("10.0.0.5:8787", False),
    ("otp-service:8787", False),
    ("localhost.evil.example", False),
    ("127.0.0.1.evil.example", False),
    ("::1", False),
    ("localhost:99999", False),
    ("", False),
]
BEYOND_LOOPBACK_HOSTS = [
    ("localhost:8787", True),
    ("10.244.1.7:8787", True),  # a Kubernetes probe, by the pod's IP
    ("[fd00::7]:8787", True),
    ("otp-service:8787", True),  # a Docker Compose / Kubernetes service name
    ("otp.auth.svc.cluster.local:8787", True), ("otp.auth.svc", True),
    ("host.docker.internal:8787", True),
    ("otp.example.com", False), ("evil.example:8787", False),
    ("otp-service.dev", False),  # "dev" is a public top-level domain
]  # fmt: skip


@pytest.mark.parametrize(
    ("bind", "hosts"),
    [
        ("127.0.0.1", LOOPBACK_HOSTS),
        ("10.1.2.3", [("10.1.2.3:8787", True), *BEYOND_LOOPBACK_HOSTS]),
        ("0.0.0.0", BEYOND_LOOPBACK_HOSTS),
    ],
)
async def test_host_header_not_reached_by_is_421(
    service: ClientFactory, bind: str, hosts: list[tuple[str, bool]]
) -> None:
    """Loopback names and addresses, the bound address and, beyond loopback, IPs and names no
    web page can own are answered; any other Host (a rebound DNS name) is 421
    host_not_allowed, on every route."""
    client = await service({"server": {"host": bind}, "auth": {"tokens": [LEGACY]}})
    for host, allowed in hosts:
        for path in ("/healthz", "/v1/messages"):
            async with client.get(path, headers={"Host": host} | bearer(LEGACY)) as response:
                answer = await response.json()
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                if allowed:
                    assert response.status == 200, (host, answer)
                else:
                    assert response.status == 421, (host, answer)
                    assert answer["error"]["code"] == "host_not_allowed"


async def test_host_allowed_hosts_adds_names_ports_and_subdomains(service: ClientFactory) -> None:
    """server.allowed_hosts: an exact name (any port), a name with a port (that port only), a
    *. wildcard (its subdomains); * answers any Host."""
    hosts = ["otp.example.com", "api.example.org:8443", "*.corp.example"]
    client = await service({"server": {"allowed_hosts": hosts}})
    cases = {"otp.example.com": 200, "OTP.example.com:9000": 200, "api.example.org:8443": 200,
             "api.example.org": 421, "a.b.corp.example": 200, "corp.example": 421,
             "evil.example": 421}  # fmt: skip
    for host, expected in cases.items():
        async with client.get("/healthz", headers={"Host": host}) as response:
            assert response.status == expected, host
    client = await service({"server": {"allowed_hosts": ["*"]}, "store": {"path": ":memory:"}})
    async with client.get("/healthz", headers={"Host": "evil.example"}) as response:
        assert response.status == 200


async def test_host_verdicts_stay_right_past_the_kept_ones(service: ClientFactory) -> None:
    """Each Host keeps its verdict when asked again, also after more distinct values than the
    policy keeps (a caller cycling through names)."""
    client = await service({"server": {"allowed_hosts": ["otp.example.com"]}})
    names = [f"n{i}.evil.example" for i in range(150)]
    for host, expected in [*((n, 421) for n in names), ("otp.example.com", 200),
                           *((n, 421) for n in names[:3]), ("otp.example.com", 200)]:  # fmt: skip
        async with client.get("/healthz", headers={"Host": host}) as response:
            assert response.status == expected, host


async def test_host_of_public_url_is_answered(service: ClientFactory) -> None:
    """The host of server.public_url (where providers call back with receipts) is answered
    without being listed again in allowed_hosts; other names stay refused."""
    client = await service({"server": {"public_url": "https://otp.example.com/base"}})
    for host, expected in {"otp.example.com": 200, "otp.example.com:443": 200,
                           "evil.example": 421}.items():  # fmt: skip
        async with client.get("/healthz", headers={"Host": host}) as response:
            assert response.status == expected, host


def test_check_config_checks_allowed_hosts_and_warns_about_any() -> None:
    """A URL or a space in allowed_hosts is a problem named with its path; "*" runs, with a
    warning that DNS rebinding is then not guarded."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"server": {"allowed_hosts": ["https://otp.example.com", "a b", "*.x:1"]}})
    assert {p.path for p in caught.value.problems} == {
        f"server.allowed_hosts[{i}]" for i in range(3)
    }
    found = warnings(parse_config({"server": {"allowed_hosts": ["*"]}}))
    assert any(p.path == "server.allowed_hosts" for p in found)
