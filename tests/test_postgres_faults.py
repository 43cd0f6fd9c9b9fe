"""PostgreSQL unreachable at start, or lost while running: the service says so and recovers.

The service reaches the real test database through a TCP proxy the test takes down (refused
connections, cut sockets: what a database restart or a lost network looks like) and brings back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .support.fakes import Recorded, Reply, started
from .support.fakes.aliyun import FakeAliyun, logto_aliyun_json
from .support.service import ClientFactory
from .support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EMAIL = {"to": "ana@example.com", "type": "SignIn", "payload": {"code": "551234"}}


@pytest.fixture
async def proxy(pg_schema: tuple[str, str]) -> AsyncIterator[TcpProxy]:
    """A proxy to the test database, down until the test brings it up."""
    proxy = TcpProxy(pg_schema[0])
    yield proxy
    await proxy.down()


def pg_config(proxy: TcpProxy, schema: str, **extra: Any) -> dict[str, Any]:
    return {
        "store": {"url": proxy.url, "schema": schema, "pool_size": 2},
        "delivery": {"poll_seconds": 0.05, "retry_delay_seconds": 0.05, "wait_seconds": 0.3},
    } | extra


async def eventually(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.1)
    return result


async def test_postgres_unreachable_at_start_is_unready_then_recovers(
    service: ClientFactory, proxy: TcpProxy, pg_schema: tuple[str, str]
) -> None:
    """Started while PostgreSQL cannot be reached, the service is up but unready (503) and
    refuses sends with 503 store_unavailable; once the database is back it becomes ready and
    accepts, without a restart."""
    client = await service(pg_config(proxy, pg_schema[1]))
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["status"] == "store_unavailable"
    refused = await client.post("/v1/email", json=EMAIL)
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "store_unavailable"

    await proxy.up()

    async def is_ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(is_ready, 20, "readiness once the database is reachable")
    answer = await client.post("/v1/email", json=EMAIL)
    assert answer.status == 200 and (await answer.json())["status"] == "captured"


async def test_postgres_lost_while_running_refuses_sends_then_recovers(
    service: ClientFactory, proxy: TcpProxy, pg_schema: tuple[str, str]
) -> None:
    """When the database goes away, new sends get 503 store_unavailable (never a 2xx without a
    durable write) and readiness fails; when it is back, the pool reconnects by itself."""
    await proxy.up()
    client = await service(pg_config(proxy, pg_schema[1]))
    assert (await client.post("/v1/email", json=EMAIL)).status == 200

    await proxy.down()
    for number in range(3):
        body = EMAIL | {"payload": {"code": f"60000{number}"}}
        answer = await client.post("/v1/email", json=body)
        assert answer.status == 503, await answer.text()
        assert (await answer.json())["error"]["code"] == "store_unavailable"
    assert (await client.get("/readyz")).status == 503

    await proxy.up()

    async def accepted() -> bool:
        body = EMAIL | {"payload": {"code": "700001"}}
        return (await client.post("/v1/email", json=body)).status == 200

    await eventually(accepted, 20, "a send accepted once the database is back")
    assert (await client.get("/readyz")).status == 200


class SlowAliyun(FakeAliyun):
    def default_reply(self, request: Recorded) -> Reply:
        return Reply(json=super().default_reply(request).json, delay=1.0)


async def test_postgres_lost_during_delivery_records_the_outcome_once_back(
    service: ClientFactory, proxy: TcpProxy, pg_schema: tuple[str, str]
) -> None:
    """An SMS in flight when the database goes away is delivered once, and its outcome is
    written when the database is back: the status says sent, with one attempt."""
    await proxy.up()
    with started(SlowAliyun) as aliyun:
        sms = {"provider": "aliyun", "aliyun": logto_aliyun_json(),
               "endpoints": {"aliyun": aliyun.endpoint(timeout_seconds=5)}}  # fmt: skip
        client = await service(pg_config(proxy, pg_schema[1], sms=sms))
        body = {"to": "+8613800138000", "type": "SignIn", "payload": {"code": "482913"}}
        answer = await client.post("/v1/sms", json=body)
        assert answer.status == 202, await answer.text()
        message_id = (await answer.json())["id"]
        await proxy.down()  # while the provider takes its time

        async def at_provider() -> bool:
            return len(aliyun.sms) == 1

        await eventually(at_provider, 10, "the SMS at the provider")
        await asyncio.sleep(1.0)  # the outcome waits for the store
        await proxy.up()

        async def sent() -> dict[str, Any] | None:
            response = await client.get(f"/v1/messages/{message_id}")
            record: dict[str, Any] = await response.json()
            return record if response.status == 200 and record["status"] == "sent" else None

        record = await eventually(sent, 30, "the outcome written once the store is back")
        assert [a["outcome"] for a in record["attempts"]] == ["sent"]
        assert len(aliyun.sms) == 1
