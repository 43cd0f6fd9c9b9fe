"""The PostgreSQL connection pool behind :class:`~otp_service.store.postgres.PostgresStore`
and :class:`~otp_service.store.pg_inbox.PgInbox`: connect (with backoff while the server is
unreachable), migrate, map connection failures to :class:`~otp_service.errors.StoreUnavailable`,
and write bookkeeping in batches (:meth:`PgConnection.write`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..errors import StoreRefused, StoreUnavailable
from ..retry import Backoff
from .batch import WriteBatch
from .migrations import migrate, quote_ident

log = logging.getLogger("otp_service.store")
T = TypeVar("T")
# What a lost or refused connection raises; everything else is a bug and propagates as is.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
)
# What can succeed if tried again later: the above, and the server refusing for the moment
# (a deadlock or serialization failure, no room: disk full, out of memory).
TRANSIENT: tuple[type[BaseException], ...] = (
    *UNAVAILABLE,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.InsufficientResourcesError,
)
Write = tuple[str, tuple[Any, ...]]


def _grouped(
    batch: list[Write], barriers: frozenset[str] = frozenset()
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The writes of one statement together, one pipelined ``executemany`` each, in the order
    each statement first appears. Reordering is safe: a message's own writes are awaited one
    after the other, so no two of them are ever in one batch. A statement in ``barriers``
    (one that touches many messages: lease renewal) keeps its place: nothing moves across it.
    """
    groups: list[tuple[str, list[tuple[Any, ...]]]] = []
    open_groups: dict[str, list[tuple[Any, ...]]] = {}
    for sql, args in batch:
        if sql in barriers:
            groups.append((sql, [args]))
            open_groups = {}
        elif (rows := open_groups.get(sql)) is not None:
            rows.append(args)
        else:
            open_groups[sql] = rows = [args]
            groups.append((sql, rows))
    return groups


def replica_name() -> str:
    """Who holds a lease: host, process and a random part (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release (asyncpg's default costs a round trip per use): we leave no
    session state behind (transactions are rolled back by the pool, locks released, LISTEN
    only on a connection of its own)."""


class PgConnection:
    """A pool on one schema, migrated on connect; the base of the PostgreSQL store."""

    # Queued statements over many messages, which other writes of a batch must not cross.
    BARRIERS: frozenset[str] = frozenset()

    def __init__(
        self,
        url: str,
        *,
        schema: str = "otp_service",
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 15.0,
    ) -> None:
        self.url = url
        self.schema = schema
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.owner = replica_name()
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Task[None] | None = None
        self._writes: WriteBatch[Write] = WriteBatch(self._commit)
        self._lost = False  # the last query failed for want of a connection
        self.dedupe_secret = b""
        self.on_connect: list[Callable[[asyncpg.Pool], Awaitable[None]]] = []
        # Queued statements that have a form taking each parameter as an array (one element per
        # write, in order): several of them in one batch are one statement, not one each.
        self.bulk: dict[str, str] = {}

    # -- plumbing

    @property
    def healthy(self) -> bool:
        """Connected, migrated, and the last query reached the server (readiness)."""
        return self._pool is not None and not self._lost

    async def probe(self) -> bool:
        with contextlib.suppress(StoreUnavailable):
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=self.connect_timeout)
        return self.healthy

    async def _connect_once(self) -> None:
        try:
            await self._create_pool()
        except UNAVAILABLE:
            raise
        except asyncpg.PostgresError as exc:  # a wrong password, no such database: fatal
            raise StoreRefused(exc) from exc

    async def _create_pool(self) -> None:
        pool = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            max_inactive_connection_lifetime=60.0,
            reset=_keep_session,
            server_settings={
                "search_path": self.schema,
                "application_name": "otp-service",
            },
        )
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn, self.schema)
            if applied:
                log.info("store: applied migration(s) %s to schema %s", applied, self.schema)
            async with pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO settings (name, value) VALUES ('dedupe_secret', $1) "
                    "ON CONFLICT (name) DO NOTHING",
                    secrets.token_bytes(32),
                )
                self.dedupe_secret = await conn.fetchval(
                    "SELECT value FROM settings WHERE name = 'dedupe_secret'"
                )
            for hook in self.on_connect:
                await hook(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _connect_forever(self) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                await self._connect_once()
                log.info("store: connected to PostgreSQL (schema %s)", self.schema)
                return
            except UNAVAILABLE as exc:
                delay = backoff.next()
                log.warning(
                    "store: PostgreSQL unreachable (%s); retrying in %.1f s",
                    type(exc).__name__,
                    delay,
                )
            await asyncio.sleep(delay)

    async def open(self) -> None:
        """Connect and migrate. A refused connection does not stop the start: the service comes
        up unready (``/readyz`` 503, sends 503) and keeps trying with backoff. A schema newer
        than this code is fatal."""
        try:
            await self._connect_once()
        except UNAVAILABLE as exc:
            log.error(
                "store: cannot reach PostgreSQL (%s: %s); not ready, retrying in the background",
                type(exc).__name__,
                exc,
            )
            self._opening = asyncio.get_running_loop().create_task(self._connect_forever())

    async def migrate_only(self) -> list[int]:
        """Connect once and migrate (``otp-service migrate``); raises when unreachable."""
        try:
            conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        except asyncpg.PostgresError as exc:
            raise StoreRefused(exc) from exc
        try:
            return await migrate(conn, self.schema)
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opening
        await self._writes.drain()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except Exception:  # a lost server: drop the connections without a goodbye
                pool.terminate()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a connection failure becomes :class:`StoreUnavailable`."""
        if self._pool is None:
            raise StoreUnavailable("PostgreSQL is not connected yet")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except TRANSIENT as exc:
            raise self._unavailable(exc) from exc
        self._lost = False

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, UNAVAILABLE):
            self._lost = True
            return StoreUnavailable(f"PostgreSQL unreachable: {type(exc).__name__}")
        return StoreUnavailable(f"PostgreSQL cannot take this now: {type(exc).__name__}")

    async def query(self, method: str, sql: str, *args: Any) -> Any:
        """One statement on a pooled connection (``fetchrow``, ``fetchval``, ``fetch`` or
        ``execute``): the pool's own shortcut, lighter than :meth:`connection`."""
        if self._pool is None:
            raise StoreUnavailable("PostgreSQL is not connected yet")
        try:
            result = await getattr(self._pool, method)(sql, *args)
        except TRANSIENT as exc:
            raise self._unavailable(exc) from exc
        self._lost = False
        return result

    async def write(self, sql: str, *args: Any) -> None:
        """Queue a bookkeeping write; whatever queued up commits together in one transaction
        (:class:`~otp_service.store.batch.WriteBatch`: a write the server refuses fails alone,
        as :class:`~otp_service.errors.WriteRefused`; an outage fails the batch)."""
        await self._writes.put((sql, args))

    async def _commit(self, batch: list[Write]) -> list[None]:
        groups = _grouped(batch, self.BARRIERS)
        async with self.connection() as conn:
            if len(groups) == 1 and (len(groups[0][1]) == 1 or groups[0][0] in self.bulk):
                await self._run(conn, *groups[0])  # one statement: atomic, no BEGIN/COMMIT
            else:
                async with conn.transaction():
                    for sql, rows in groups:
                        await self._run(conn, sql, rows)
        return [None] * len(batch)

    async def _run(self, conn: asyncpg.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One group of a batch: one statement (a single write, or the array form of many
        writes: :attr:`bulk`), else pipelined."""
        if len(rows) == 1:
            await conn.execute(sql, *rows[0])
        elif (many := self.bulk.get(sql)) is not None:
            await conn.execute(many, *[list(column) for column in zip(*rows, strict=True)])
        else:
            await conn.executemany(sql, rows)

    async def drop_schema(self) -> None:
        """Remove every table of this store (tests; an operator uninstalling)."""
        async with self.connection() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(self.schema)} CASCADE")
