"""The SQLite store's engine: one owned file, one connection, writes in batches.

Every operation is queued (:class:`~otp_service.store.batch.WriteBatch`) and one batch at a
time runs in a transaction (group commit), each operation in its own savepoint so that one
failing fails alone (:class:`~otp_service.errors.WriteRefused` for its caller). A failure of the
store itself (the commit, an I/O error, a full disk, the file deleted, replaced or made
read-only) fails the batch with :class:`~otp_service.errors.StoreUnavailable` and makes the
store unhealthy until :meth:`SqliteEngine.probe` sees a durable write work again. The SQL of
the tables is :mod:`.sqlite`'s; the engine only owns the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from ..errors import StoreUnavailable
from .batch import WriteBatch

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
log = logging.getLogger("otp_service.store")
PROBE_BYTES = 256 * 1024  # what a probe writes: more than one request's body can hold


def _ignore(future: asyncio.Future[Any]) -> None:
    """Retrieve an unawaited write's outcome (asyncio would warn of an unread error)."""
    if not future.cancelled():
        future.exception()


def _checkpoint(conn: sqlite3.Connection) -> None:
    """A marker operation: :meth:`SqliteStore.compact`'s checkpoint, run after its batch."""


def create_private(path: str) -> None:
    """Create ``path`` (and its folder) readable by this user only, before SQLite opens it:
    SQLite gives its -wal and -shm files the main file's permissions."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _store_failure(exc: BaseException) -> bool:
    """Whether an operation's error is the store's (I/O, full, read-only), not the request's."""
    return isinstance(exc, sqlite3.OperationalError | OSError) and not isinstance(
        exc, sqlite3.IntegrityError
    )


class SqliteEngine:
    """Owns the file and its connection; runs operations in batches."""

    def __init__(self, path: str | Path, lock_wait: float = 30.0) -> None:
        self.path = str(path)
        self.lock_wait = lock_wait
        self._lock_file: IO[str] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._batch: WriteBatch[tuple[Operation, bool]] = WriteBatch(self._commit)
        self._full_sync = True
        self._gate = asyncio.Lock()  # one batch or probe at a time on the connection
        self._inode: tuple[int, int] | None = None  # (device, inode) of the file we opened
        self._healthy = True
        self.dedupe_secret = b""

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the tables on open (the store's SQL): in the store's thread."""

    # -- plumbing

    def _lock(self) -> None:
        """Own the file alone: a second process (a rolling deploy, a misconfigured replica)
        waits for the first to exit rather than free its leases and resend its messages."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_file = open(fd, "a")  # noqa: SIM115 (held while open)
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock_file.close()
                    raise OSError(
                        f"another otp-service process owns {self.path} (waited "
                        f"{self.lock_wait:g} s); give each instance its own store.path"
                    ) from None
                time.sleep(0.2)

    def _connect(self) -> None:
        if self.path != ":memory:":
            create_private(self.path)
            self._lock()
        self._conn = self._open_connection()
        self._prepare(self._conn)
        self._inode = self._file_identity()

    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Before WAL: the WAL index then lives in our memory, not in a mapped -shm file.
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=ON")  # a deleted body (the code) is overwritten
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        self._full_sync = True
        return conn

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        info = os.stat(self.path)
        return info.st_dev, info.st_ino

    def _check_file(self) -> None:
        """Raise StoreUnavailable when the file we write is no longer the one at our path, or
        can no longer be written (deleted, replaced, made immutable)."""
        if self._inode is None:
            return
        try:
            if self._file_identity() != self._inode:
                raise StoreUnavailable(f"{self.path} was deleted or replaced")
            for name in (self.path, f"{self.path}-wal"):
                if os.path.exists(name):
                    with open(name, "r+b"):
                        pass
        except OSError as exc:
            raise StoreUnavailable(f"{self.path} cannot be written: {exc.strerror}") from exc

    @property
    def healthy(self) -> bool:
        return self._healthy

    def _mark(self, healthy: bool, why: object = None) -> None:
        if healthy != self._healthy:
            if healthy:
                log.warning("store %s is usable again", self.path)
            else:
                log.error("store %s is unavailable: %s", self.path, why)
        self._healthy = healthy

    def _repair_and_write(self) -> None:
        """The probe, in the store's thread: recreate a deleted file from the open handle,
        reconnect after an I/O error, then commit a durable write."""
        conn = self._conn
        assert conn is not None
        if self._inode is not None and not os.path.exists(self.path):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            partial = f"{self.path}.recovering"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            conn.execute("VACUUM INTO ?", (partial,))  # everything the lost file held
            os.replace(partial, self.path)
            conn.close()
            self._relock()
            conn = self._conn = self._open_connection()
            self._inode = self._file_identity()
            log.warning("store %s was deleted; written anew from the open handle", self.path)
        self._check_file()
        try:
            conn.execute("PRAGMA synchronous=FULL")
            self._full_sync = True
            conn.execute("BEGIN IMMEDIATE")
            # Room for a message at least (a full disk may still take a tiny write).
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', zeroblob(?))",
                (PROBE_BYTES,),
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            # An I/O error can leave the connection unusable: start a new one on the same file.
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._conn = self._open_connection()
            raise

    def _relock(self) -> None:
        """Take the lock anew when its file went away with the store's folder."""
        if self._lock_file is not None and not os.path.exists(f"{self.path}.lock"):
            self._lock_file.close()
            self._lock_file = None
            self._lock()

    async def probe(self) -> bool:
        async with self._gate:
            try:
                if self._healthy:
                    self._check_file()  # cheap: stat and open, no write
                else:
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._repair_and_write
                    )
                self._mark(True)
            except (StoreUnavailable, sqlite3.Error, OSError) as exc:
                self._mark(False, exc)
        return self._healthy

    def _run_batch(self, batch: list[Operation], durable: bool) -> list[Any]:
        """One transaction: each operation's result, or its exception when it failed alone."""
        conn = self._conn
        assert conn is not None
        if durable:
            self._check_file()  # a write to a deleted file would be answered, then lost
        if durable != self._full_sync:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._full_sync = durable
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for operation in batch:
                if operation is _checkpoint:  # runs after the commit, outside a transaction
                    results.append(None)
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    results.append(operation(conn))
                except Exception as exc:  # this request's write fails alone...
                    if _store_failure(exc):  # ...unless the store itself failed
                        raise
                    conn.execute("ROLLBACK TO op")
                    results.append(exc)
                conn.execute("RELEASE op")
            if durable:
                self._check_file()
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if any(operation is _checkpoint for operation in batch):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return results

    async def _commit(self, batch: list[tuple[Operation, bool]]) -> list[Any]:
        """The batch's commit (see :class:`WriteBatch`): any failure here is the store's."""
        durable = any(d for _, d in batch)
        operations = [op for op, _ in batch]
        if self._conn is None:  # closed (or not yet open): nothing failed
            raise StoreUnavailable(f"{self.path} is not open")
        try:
            async with self._gate:
                if durable:  # an fsync: off the event loop
                    return await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._run_batch, operations, True
                    )
                # no fsync: tens of microseconds, less than a thread hop costs
                return self._run_batch(operations, False)
        except Exception as exc:  # the store failed: nobody's write is kept
            self._mark(False, exc)
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"the store cannot write: {exc}") from exc

    async def _do(self, operation: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run ``operation`` in the next transaction; ``durable`` makes that commit fsync."""
        result: T = await self._batch.put((operation, durable))
        return result

    def _do_later(self, operation: Operation) -> None:
        """Queue ``operation`` with the next batch, unawaited (its failure is its own to
        handle: nobody is told)."""
        self._batch.put_nowait((operation, False)).add_done_callback(_ignore)

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    async def close(self) -> None:
        await self._batch.drain()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None
        self._executor.shutdown(wait=True)

    async def compact(self) -> None:
        """Fold the WAL into the main file and truncate it: the pages of finished messages
        (their codes) do not linger in the -wal file (secure_delete zeroes the main file's)."""
        await self._do(_checkpoint, durable=True)
