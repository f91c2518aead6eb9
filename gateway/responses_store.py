"""Where stored Responses live (``store: true``): Redis when configured, else a SQLite file.

A stored response is opaque bytes here (the Responses door writes the Response object and its
conversation), kept under its tenant and id for the policy's ``responses.ttl``. A lookup names
the tenant, so one tenant never reads, continues or deletes another's response: a foreign id
is simply not found.

Unlike a cache, this store cannot be bypassed: a continuation without its history would be a
different conversation. A store that fails raises `StoreUnavailable`, which the door answers
with an explicit error rather than losing context silently.

The embedded store is one SQLite file (WAL) in the data dir, so stored responses survive a
restart; file work runs on one thread that owns the connection. ``synchronous=NORMAL``: a
commit survives the process dying, at a fraction of FULL's fsyncs. It holds at most
``max_entries`` (the oldest go first); expired rows are deleted as new ones come.

NOTE: a put is held in memory, where reads find it at once, and written to the file behind
the response, in batches (one transaction for all that came within `BATCH_WAIT_S`): a write
on the request's path cost about 290 µs on a 2-core machine (half of it the hop to the
thread), which the Responses door would have added to every answer. Shutdown writes what is
held; a process killed outright loses the puts of its last 50 ms or so. A batch that fails stays in
memory (still read) and is tried again a second later.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import redis.asyncio as redis

from gateway.exact_store import tenant_part
from gateway.sqlite_files import open_file

T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store could not read or write; the request fails with an explicit error."""


class ResponseStore(Protocol):
    async def get(self, tenant: str, response_id: str) -> bytes | None: ...
    async def put(self, tenant: str, response_id: str, value: bytes, ttl_s: float) -> None: ...
    async def delete(self, tenant: str, response_id: str) -> bool: ...
    async def aclose(self) -> None: ...
    def health(self) -> dict[str, str]: ...


def open_responses(redis_url: str | None, data_dir: Path, max_entries: int) -> ResponseStore:
    """The Redis store when a URL is configured, else the SQLite file under ``data_dir``."""
    if redis_url:
        return RedisResponses(redis_url)
    return SQLiteResponses(data_dir / "responses.sqlite3", max_entries)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""


class SQLiteResponses:
    """Stored responses in one SQLite file, opened on first use."""

    BATCH_WAIT_S = 0.05
    """How long a put waits in memory for others to share its write: a write (its thread
    hop and commit) costs about 0.2 ms of CPU, which a busy gateway then spends once for all
    the puts of 50 ms, not once per answer."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        """Rows in the file, counted once when it opens and kept up to date by each write
        (all on the one thread), so a write never counts the table."""
        self._held: dict[tuple[str, str], _Row] = {}
        """Puts not yet in the file, by (tenant, id), oldest first."""
        self._writer: asyncio.Task[None] | None = None

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        held = self._held.get((tenant, response_id))
        if held is not None:
            return held.value if held.expires > time.time() else None
        return await self._in_thread(self._get_sync, tenant, response_id)

    async def put(self, tenant: str, response_id: str, value: bytes, ttl_s: float) -> None:
        now = time.time()
        self._held[(tenant, response_id)] = _Row(response_id, tenant, now, now + ttl_s, value)
        while len(self._held) > self.max_entries:
            del self._held[next(iter(self._held))]
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_held())

    async def delete(self, tenant: str, response_id: str) -> bool:
        held = self._held.pop((tenant, response_id), None)
        # After any batch that holds it: the thread runs its work in order.
        deleted = await self._in_thread(self._delete_sync, tenant, response_id)
        return deleted or (held is not None and held.expires > time.time())

    async def aclose(self) -> None:
        """Write what is held (a batch being written finishes on the thread first), then
        close the file."""
        try:
            if self._writer is not None:
                self._writer.cancel()
            if self._held:
                await self._write_batch()
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
        except StoreUnavailable:
            log.error("responses store: %d responses not written at shutdown", len(self._held))
        finally:
            self._thread.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, str]:
        return {"responses_store": "sqlite"}

    async def _write_held(self) -> None:
        """Write what is held, batch after batch, until nothing is; each batch waits
        `BATCH_WAIT_S` for the puts that come meanwhile."""
        while self._held:
            await asyncio.sleep(self.BATCH_WAIT_S)
            try:
                await self._write_batch()
            except StoreUnavailable:
                await asyncio.sleep(1.0)  # held (and read) meanwhile; logged by _in_thread

    async def _write_batch(self) -> None:
        batch = list(self._held.items())
        await self._in_thread(self._put_sync, [row for _, row in batch])
        for key, row in batch:
            if self._held.get(key) is row:
                del self._held[key]

    def _put_sync(self, rows: list[_Row]) -> None:
        conn = self._connect()
        with conn:
            count = (
                self._count
                - conn.execute("DELETE FROM responses WHERE expires <= ?", (time.time(),)).rowcount
            )
            # Ids are new UUIDs; OR REPLACE only so that a batch whose writer was cancelled
            # at shutdown, written again, cannot fail.
            conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", rows)
            count += len(rows)
            if count > self.max_entries:
                count -= conn.execute(
                    "DELETE FROM responses WHERE rowid IN "
                    "(SELECT rowid FROM responses ORDER BY created LIMIT ?)",
                    (count - self.max_entries,),
                ).rowcount
        self._count = count  # once committed

    def _get_sync(self, tenant: str, response_id: str) -> bytes | None:
        row = (
            self._connect()
            .execute(
                "SELECT value FROM responses WHERE tenant = ? AND id = ? AND expires > ?",
                (tenant, response_id, time.time()),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def _delete_sync(self, tenant: str, response_id: str) -> bool:
        conn = self._connect()
        with conn:
            deleted = conn.execute(
                "DELETE FROM responses WHERE tenant = ? AND id = ? AND expires > ?",
                (tenant, response_id, time.time()),
            ).rowcount
        self._count -= deleted
        return deleted > 0

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, functools.partial(fn, *args))
        except (sqlite3.Error, OSError) as exc:  # OSError: the data dir cannot be made
            log.error("responses store: %s: %s", self.path, exc)
            raise StoreUnavailable(f"the responses store failed: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # The default isolation: `with conn` makes each call's statements one transaction.
            conn = open_file(self.path, _SCHEMA)
            (self._count,) = conn.execute("SELECT COUNT(*) FROM responses").fetchone()
            self._conn = conn
        return self._conn


class _Row(NamedTuple):
    """A stored response as its row is written."""

    id: str
    tenant: str
    created: float
    expires: float
    value: bytes


class RedisResponses:
    """Stored responses in Redis under ``<prefix><tenant hash>:<id>``, each with its TTL."""

    def __init__(self, url: str, prefix: str = "gw:responses:", timeout_s: float = 2.0) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix

    def _key(self, tenant: str, response_id: str) -> str:
        return f"{self._prefix}{tenant_part(tenant)}:{response_id}"

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        value = await self._call(self._redis.get(self._key(tenant, response_id)))
        return value.encode() if isinstance(value, str) else value

    async def put(self, tenant: str, response_id: str, value: bytes, ttl_s: float) -> None:
        key = self._key(tenant, response_id)
        await self._call(self._redis.set(key, value, px=max(1, int(ttl_s * 1000))))

    async def delete(self, tenant: str, response_id: str) -> bool:
        deleted = await self._call(self._redis.delete(self._key(tenant, response_id)))
        return bool(deleted)

    async def aclose(self) -> None:
        await self._redis.aclose()

    def health(self) -> dict[str, str]:
        return {"responses_store": "redis"}

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (redis.RedisError, OSError) as exc:
            log.error("responses store: redis failed: %s", exc)
            raise StoreUnavailable(f"the responses store failed: {exc}") from exc
