"""Property: whatever JSON arrives at ``POST /v1/email`` and ``POST /v1/sms`` (random Unicode
with lone surrogates and line separators, deep nesting, any type where a string belongs), the
real ``otp-service serve`` process never answers 5xx, every 2xx names a message that can be
fetched by its id, and a valid request sent in the same burst is delivered unharmed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support.processes import HTTP_TIMEOUT, ServiceProcess

pytestmark = pytest.mark.slow

SEPARATORS = ["\u2028", "\u2029", "\x85", "\r\n", "\n", "\x00", "\t", "\x1b", "\ufeff", "\u200b"]
VALID_TO = {"email": ["ana@example.com", "Ana+tag@Example.COM", "δοκιμή@παράδειγμα.δοκιμή"],
            "sms": ["+33612345678", "8613800138000", "+8613800138000"]}  # fmt: skip

texts = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.lists(st.one_of(st.text(max_size=8), st.sampled_from(SEPARATORS)), max_size=6).map("".join),
    st.sampled_from(["{{code}}", "{{ _logto_placeholder }}", "=?UTF-8?B?SGk=?=", "javascript:x",
                     "https://example.com/a", "SignIn", "Generic", "::ffff:203.0.113.7"]),
)  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=25,
)


def deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def bodies(channel: str) -> st.SearchStrategy[Any]:
    """Logto-shaped requests with any field possibly wrong, or any JSON at all."""
    payload = st.fixed_dictionaries(
        {},
        optional={
            "code": st.one_of(st.text(max_size=8), json_values),
            "link": st.one_of(texts, json_values),
            "locale": st.one_of(st.sampled_from(["en", "fr-CA", "zh-Hans", "xx"]), json_values),
            "uiLocales": st.one_of(texts, json_values),
            "application": st.one_of(st.fixed_dictionaries({"name": texts}), json_values),
            "user": st.one_of(
                st.fixed_dictionaries({"name": texts}),
                st.integers(1, 200).map(lambda d: {"name": deep(d, "x")}),
            ),
            "_logto_placeholder": json_values,
            "range": json_values,
        },
    ).flatmap(lambda base: st.dictionaries(texts, json_values, max_size=3).map(base.__or__))
    logto = st.fixed_dictionaries(
        {
            "to": st.one_of(st.sampled_from(VALID_TO[channel]), texts, json_values),
            "type": st.one_of(
                st.sampled_from(["SignIn", "Register", "Generic", "Test"]), texts, json_values
            ),
            "payload": st.one_of(payload, json_values),
        },
        optional={"ip": st.one_of(texts, json_values), "ttl": json_values},
    )
    return st.one_of(logto, logto, logto, json_values)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One capture-mode service process for every example (limits off: the valid neighbour
    must never be refused for rate)."""
    folder: Path = tmp_path_factory.mktemp("property")
    config = folder / "config.yaml"
    config.write_text(json.dumps({"store": {"path": str(folder / "outbox.sqlite3")},
                                  "limits": {"enabled": False}}), encoding="utf-8")  # fmt: skip
    process = ServiceProcess(config, folder / "service.log")

    async def ready() -> None:
        async with aiohttp.ClientSession() as http:
            await process.ready(http)

    asyncio.run(ready())
    try:
        yield process
    finally:
        process.stop()


async def _burst(service: ServiceProcess, channel: str, hostile: list[Any]) -> None:
    code = f"{uuid.uuid4().int % 10**6:06d}"
    valid = {"to": VALID_TO[channel][0], "type": "SignIn", "payload": {"code": code}}
    async with aiohttp.ClientSession() as http:

        async def post(body: Any) -> tuple[int, Any]:
            data = json.dumps(body, ensure_ascii=True)  # lone surrogates travel as \\udXXX
            async with http.post(
                f"{service.url}/v1/{channel}", data=data,
                headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT,
            ) as response:  # fmt: skip
                return response.status, await response.json()

        answers = await asyncio.gather(*(post(b) for b in [*hostile, valid]))
        for (status, answer), body in zip(answers, [*hostile, valid], strict=True):
            assert status < 500, (status, answer, body)
            if 200 <= status < 300:
                async with http.get(
                    f"{service.url}/v1/messages/{answer['id']}", timeout=HTTP_TIMEOUT
                ) as found:
                    assert found.status == 200, (await found.text(), body)
        status, answer = answers[-1]
        assert status == 200 and answer["status"] == "captured", answer
        async with http.get(f"{service.url}/v1/messages/{answer['id']}") as found:
            assert (await found.json())["code"] == code


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_hostile_json_never_5xx_and_never_harms_a_valid_neighbour(
    service: ServiceProcess, channel: str
) -> None:
    """Generated requests (random Unicode with surrogates and separators, nesting, wrong types)
    never get a 5xx; each 2xx is retrievable by id; a valid request in the same burst is
    captured with its code."""

    @settings(max_examples=120, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(st.lists(bodies(channel), min_size=1, max_size=4))
    def run(hostile: list[Any]) -> None:
        asyncio.run(_burst(service, channel, hostile))

    run()
    assert service.process.poll() is None, service.log_text()
