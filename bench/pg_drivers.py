"""``python -m bench.pg_drivers``: asyncpg against psycopg 3 (+ psycopg-pool) on the outbox's
own workload, to choose the PostgreSQL driver (the figures are in the README).

Per message, as the service does it: accept (insert the message with its body and its
idempotency key, one transaction), then the outcome (insert the attempt, update the message),
at concurrency 50 over a pool of 10, with the client's CPU per message. Needs both drivers
(``pip install asyncpg 'psycopg[binary]' psycopg-pool``) and a PostgreSQL
(``OTP_BENCH_DATABASE_URL``, default the local test database); works in a schema of its own,
dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

URL = os.environ.get("OTP_BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
DDL = """
DROP SCHEMA IF EXISTS bench_drivers CASCADE; CREATE SCHEMA bench_drivers;
CREATE TABLE bench_drivers.messages (id text PRIMARY KEY, channel text, recipient text,
  type text, status text, body text, created_at float8, expires_at float8,
  next_attempt_at float8, lease_until float8, attempts int DEFAULT 0, provider text,
  finished_at float8);
CREATE TABLE bench_drivers.idem (key text PRIMARY KEY, message_id text, created_at float8);
CREATE TABLE bench_drivers.attempts (message_id text, at float8, provider text, outcome text);
"""
BODY = json.dumps({"subject": "Your code", "text": "x" * 400, "html": "<p>" + "y" * 1500})
INSERT = (
    "INSERT INTO bench_drivers.messages (id, channel, recipient, type, status, body, "
    "created_at, expires_at, next_attempt_at, lease_until) "
    "VALUES ({0}, 'email', {1}, 'SignIn', 'queued', {2}, {3}, {4}, {3}, {5})"
)
IDEMPOTENCY = (
    "INSERT INTO bench_drivers.idem (key, message_id, created_at) "
    "VALUES ({0}, {1}, {2}) ON CONFLICT DO NOTHING"
)
OUTCOME = ("WITH a AS (INSERT INTO bench_drivers.attempts VALUES ({0}, {1}, 'capture', "
           "'captured')) UPDATE bench_drivers.messages SET status = 'captured', body = NULL, "
           "provider = 'capture', finished_at = {1}, lease_until = NULL, "
           "attempts = attempts + 1 WHERE id = {0}")  # fmt: skip
One = Callable[[int], Awaitable[None]]


async def with_asyncpg() -> tuple[Any, One]:
    import asyncpg

    pool = await asyncpg.create_pool(URL, min_size=10, max_size=10)
    await pool.execute(DDL)
    insert, idem, outcome = (s.format(*(f"${i}" for i in range(1, 7))) for s in
                             (INSERT, IDEMPOTENCY, OUTCOME))  # fmt: skip

    async def one(n: int) -> None:
        mid, now = uuid.uuid4().hex, time.time()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(insert, mid, f"u{n}@example.com", BODY, now, now + 600, now + 120)
            await conn.execute(idem, "k" + mid, mid, now)
        async with pool.acquire() as conn:
            await conn.execute(outcome, mid, time.time())

    return pool, one


async def with_psycopg() -> tuple[Any, One]:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(URL, min_size=10, max_size=10, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await conn.execute(DDL)
    insert = INSERT.replace("{3}, {4}, {3}, {5}", "{3}, {4}, {5}, {6}").format(*["%s"] * 7)
    idem = IDEMPOTENCY.format("%s", "%s", "%s")
    outcome = OUTCOME.format("%(id)s", "%(at)s")

    async def one(n: int) -> None:
        mid, now = uuid.uuid4().hex, time.time()
        async with pool.connection() as conn:  # one transaction, committed on exit
            await conn.execute(insert, (mid, f"u{n}@example.com", BODY, now, now + 600, now,
                                        now + 120))  # fmt: skip
            await conn.execute(idem, ("k" + mid, mid, now))
        async with pool.connection() as conn:
            await conn.execute(outcome, {"id": mid, "at": time.time()})

    return pool, one


async def measure(driver: str, count: int, concurrency: int) -> dict[str, Any]:
    pool, one = await (with_asyncpg() if driver == "asyncpg" else with_psycopg())
    for n in range(200):  # warm-up: connections, prepared statements
        await one(-n)
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(n: int) -> None:
        async with semaphore:
            await one(n)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(bounded(n) for n in range(count)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    await pool.close()
    return {"driver": driver, "messages": count, "per_second": count / wall,
            "client_cpu_us_per_message": 1e6 * cpu / count}  # fmt: skip


async def drop() -> None:
    import asyncpg

    conn = await asyncpg.connect(URL)
    await conn.execute("DROP SCHEMA IF EXISTS bench_drivers CASCADE")
    await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_drivers", description=__doc__)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per driver")
    args = parser.parse_args()
    print("| driver | messages | messages/s | client CPU µs/message |\n|---|--:|--:|--:|")
    try:
        for _ in range(args.rounds):
            for driver in ("asyncpg", "psycopg"):
                r = asyncio.run(measure(driver, args.messages, 50))
                print(f"| {driver} | {r['messages']} | {r['per_second']:.0f} "
                      f"| {r['client_cpu_us_per_message']:.0f} |", flush=True)  # fmt: skip
    finally:
        asyncio.run(drop())


if __name__ == "__main__":
    main()
