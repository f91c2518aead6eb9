"""Where stored Responses live (``store: true``): Redis when configured, else a SQLite file.

A stored response is opaque bytes here (the Responses door writes the Response object and its
conversation), kept under its tenant and id for the policy's ``responses.ttl``. A lookup names
the tenant, so one tenant never reads, continues or deletes another's response: a foreign id
is simply not found.

Unlike a cache, this store cannot be bypassed: a continuation without its history would be a
different conversation. A store that fails raises `StoreUnavailable`, which the door answers
with an explicit error rather than losing context silently.

The embedded store is one SQLite file (WAL) in the data dir, so stored responses survive a
restart; writes run on one thread that owns the connection. ``synchronous=NORMAL``: a commit
survives the process dying (the case a restart is about), at a fraction of FULL's fsyncs. It
holds at most ``max_entries`` (the oldest go first); expired rows are deleted as new ones come.
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
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis

from gateway.exact_store import tenant_part

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

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="responses-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        """Rows in the file, counted once when it opens and kept up to date by each write
        (all on the one thread), so a write never counts the table."""

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        return await self._in_thread(self._get_sync, tenant, response_id)

    async def put(self, tenant: str, response_id: str, value: bytes, ttl_s: float) -> None:
        await self._in_thread(self._put_sync, tenant, response_id, value, ttl_s)

    async def delete(self, tenant: str, response_id: str) -> bool:
        return await self._in_thread(self._delete_sync, tenant, response_id)

    async def aclose(self) -> None:
        try:
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
        finally:
            self._thread.shutdown(wait=False, cancel_futures=True)

    def health(self) -> dict[str, str]:
        return {"responses_store": "sqlite"}

    def _put_sync(self, tenant: str, response_id: str, value: bytes, ttl_s: float) -> None:
        conn, now = self._connect(), time.time()
        with conn:
            count = (
                self._count
                - conn.execute("DELETE FROM responses WHERE expires <= ?", (now,)).rowcount
            )
            conn.execute(  # a new id each time (resp_ and a UUID4): never a replacement
                "INSERT INTO responses VALUES (?, ?, ?, ?, ?)",
                (response_id, tenant, now, now + ttl_s, value),
            )
            count += 1
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
        except sqlite3.Error as exc:
            log.error("responses store: %s: %s", self.path, exc)
            raise StoreUnavailable(f"the responses store failed: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The default isolation: `with conn` makes each call's statements one transaction.
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.executescript(_SCHEMA)
            (self._count,) = conn.execute("SELECT COUNT(*) FROM responses").fetchone()
            self._conn = conn
        return self._conn


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
