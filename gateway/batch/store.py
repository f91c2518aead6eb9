"""Where the Batch API's state lives: Redis when configured, else a SQLite file in the data dir.

The state is the File and Batch objects of each tenant, and each batch's lines: which replica
claimed a line (`claim`, atomic, so a line runs at most once across replicas and restarts) and
what came of it (`finish`, first writer wins); and the upstream batches its lines were sent in
(`put_job`, see `gateway.batch.upstream`), so that another replica resumes polling one instead
of sending its lines again. Replicas prove they are alive with a heartbeat
(`beat`): a line claimed by a replica whose heartbeat has stopped was cut off mid-call, and is
reported as interrupted, never run again, since its model may have answered already.

Objects are kept as JSON bytes and looked up under their tenant: another tenant's id is simply
not found. The uploaded bytes themselves are files on disk (`gateway.batch.files`).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

from gateway.batch.wire import UNFINISHED
from gateway.errors import GatewayError
from gateway.sqlite_files import open_file

T = TypeVar("T")
Kind = str
"""``file`` or ``batch``: the two kinds of object a tenant owns."""


class StateUnavailable(GatewayError):
    """The store could not be read or written: the API answers 503, the runner tries later."""

    status = 503
    default_code = "batch_store_unavailable"


@dataclass(frozen=True, slots=True)
class LineState:
    """A claimed line: its claimant, and its result line once it has one (``ok``: a 2xx)."""

    owner: str
    ok: bool | None
    result: bytes | None


class BatchStore(Protocol):
    async def put(self, kind: Kind, tenant: str, obj: dict[str, Any]) -> None: ...
    async def get(self, kind: Kind, tenant: str, obj_id: str) -> dict[str, Any] | None: ...
    async def listing(self, kind: Kind, tenant: str) -> list[dict[str, Any]]:
        """The tenant's objects of a kind, newest first."""
        ...

    async def delete(self, kind: Kind, tenant: str, obj_id: str) -> bool: ...
    async def update(
        self, tenant: str, batch_id: str, expect: Iterable[str], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The batch with ``changes`` applied, if its status is one of ``expect`` (else None,
        unchanged): the one way a status moves, so two replicas never both move it."""
        ...

    async def unfinished(self) -> list[tuple[str, str]]:
        """(tenant, batch id) of every batch not in a final status."""
        ...

    async def purge(self, before: float) -> list[str]:
        """Delete the files and finished batches created before ``before``; returns the
        deleted files' ids (their bytes are the caller's to remove)."""
        ...

    async def claim(self, batch_id: str, index: int, owner: str) -> bool: ...
    async def finish(self, batch_id: str, index: int, ok: bool, result: bytes) -> bool: ...
    async def lines(self, batch_id: str) -> dict[int, LineState]: ...
    async def counts(self, batch_id: str) -> tuple[int, int]:
        """Lines finished with a 2xx, and otherwise (``request_counts`` while it runs)."""
        ...

    async def reclaim(self, batch_id: str, index: int, owner: str, new_owner: str) -> bool:
        """Move a line without a result from ``owner`` (stopped) to ``new_owner``, if it is
        still ``owner``'s: a line parked in an upstream batch is taken over, not run again."""
        ...

    async def put_job(self, batch_id: str, job: dict[str, Any]) -> None:
        """Write an upstream batch job (JSON object with an ``id``) of the batch."""
        ...

    async def jobs(self, batch_id: str) -> list[dict[str, Any]]: ...
    async def forget_lines(self, batch_id: str) -> None:
        """Forget the batch's lines and upstream jobs (once its files are written)."""
        ...

    async def beat(self, owner: str, ttl_s: float) -> None: ...
    async def alive(self, owners: set[str]) -> set[str]: ...
    async def aclose(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_objects (
    kind TEXT NOT NULL, tenant TEXT NOT NULL, id TEXT NOT NULL,
    created REAL NOT NULL, status TEXT, value BLOB NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);
CREATE INDEX IF NOT EXISTS batch_objects_status ON batch_objects (status);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch TEXT NOT NULL, idx INTEGER NOT NULL, owner TEXT NOT NULL, ok INTEGER, result BLOB,
    PRIMARY KEY (batch, idx)
);
CREATE TABLE IF NOT EXISTS batch_jobs (
    batch TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (batch, id)
);
CREATE TABLE IF NOT EXISTS batch_owners (owner TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


class SQLiteBatchStore:
    """The embedded store: one SQLite file (WAL), shared by the processes of one data dir;
    every call runs on one thread that owns the connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-sqlite")
        self._conn: sqlite3.Connection | None = None

    async def put(self, kind: Kind, tenant: str, obj: dict[str, Any]) -> None:
        await self._run(self._put_sync, kind, tenant, obj)

    async def get(self, kind: Kind, tenant: str, obj_id: str) -> dict[str, Any] | None:
        row = await self._run(
            self._one,
            "SELECT value FROM batch_objects WHERE kind = ? AND tenant = ? AND id = ?",
            (kind, tenant, obj_id),
        )
        return None if row is None else _decode(row[0])

    async def listing(self, kind: Kind, tenant: str) -> list[dict[str, Any]]:
        rows = await self._run(
            self._all,
            "SELECT value FROM batch_objects WHERE kind = ? AND tenant = ? "
            "ORDER BY created DESC, id DESC",
            (kind, tenant),
        )
        return [_decode(value) for (value,) in rows]

    async def delete(self, kind: Kind, tenant: str, obj_id: str) -> bool:
        return await self._run(
            self._write,
            "DELETE FROM batch_objects WHERE kind = ? AND tenant = ? AND id = ?",
            (kind, tenant, obj_id),
        )

    async def update(
        self, tenant: str, batch_id: str, expect: Iterable[str], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        return await self._run(self._update_sync, tenant, batch_id, frozenset(expect), changes)

    async def unfinished(self) -> list[tuple[str, str]]:
        marks = ",".join("?" * len(UNFINISHED))
        rows = await self._run(
            self._all,
            f"SELECT tenant, id FROM batch_objects WHERE kind = 'batch' AND status IN ({marks}) "
            "ORDER BY created",
            tuple(sorted(UNFINISHED)),
        )
        return [(tenant, batch_id) for tenant, batch_id in rows]

    async def purge(self, before: float) -> list[str]:
        return await self._run(self._purge_sync, before)

    async def claim(self, batch_id: str, index: int, owner: str) -> bool:
        return await self._run(
            self._write,
            "INSERT OR IGNORE INTO batch_lines (batch, idx, owner) VALUES (?, ?, ?)",
            (batch_id, index, owner),
        )

    async def finish(self, batch_id: str, index: int, ok: bool, result: bytes) -> bool:
        return await self._run(
            self._write,
            "UPDATE batch_lines SET ok = ?, result = ? "
            "WHERE batch = ? AND idx = ? AND result IS NULL",
            (int(ok), result, batch_id, index),
        )

    async def lines(self, batch_id: str) -> dict[int, LineState]:
        rows = await self._run(
            self._all, "SELECT idx, owner, ok, result FROM batch_lines WHERE batch = ?", (batch_id,)
        )
        return {
            idx: LineState(owner, None if ok is None else bool(ok), result)
            for idx, owner, ok, result in rows
        }

    async def counts(self, batch_id: str) -> tuple[int, int]:
        row = await self._run(
            self._one,
            "SELECT COALESCE(SUM(ok = 1), 0), COALESCE(SUM(ok = 0), 0) FROM batch_lines "
            "WHERE batch = ?",
            (batch_id,),
        )
        return int(row[0]), int(row[1])

    async def reclaim(self, batch_id: str, index: int, owner: str, new_owner: str) -> bool:
        return await self._run(
            self._write,
            "UPDATE batch_lines SET owner = ? "
            "WHERE batch = ? AND idx = ? AND owner = ? AND result IS NULL",
            (new_owner, batch_id, index, owner),
        )

    async def put_job(self, batch_id: str, job: dict[str, Any]) -> None:
        await self._run(
            self._write,
            "INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?)",
            (batch_id, job["id"], msgspec.json.encode(job)),
        )

    async def jobs(self, batch_id: str) -> list[dict[str, Any]]:
        rows = await self._run(
            self._all, "SELECT value FROM batch_jobs WHERE batch = ? ORDER BY id", (batch_id,)
        )
        return [_decode(value) for (value,) in rows]

    async def forget_lines(self, batch_id: str) -> None:
        await self._run(self._write, "DELETE FROM batch_lines WHERE batch = ?", (batch_id,))
        await self._run(self._write, "DELETE FROM batch_jobs WHERE batch = ?", (batch_id,))

    async def beat(self, owner: str, ttl_s: float) -> None:
        await self._run(
            self._write,
            "INSERT OR REPLACE INTO batch_owners VALUES (?, ?)",
            (owner, time.time() + ttl_s),
        )

    async def alive(self, owners: set[str]) -> set[str]:
        rows = await self._run(
            self._all, "SELECT owner FROM batch_owners WHERE expires > ?", (time.time(),)
        )
        return {owner for (owner,) in rows} & owners

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._thread.shutdown(wait=False, cancel_futures=True)

    # -- on the store's thread --------------------------------------------------------------

    def _put_sync(self, kind: Kind, tenant: str, obj: dict[str, Any]) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO batch_objects VALUES (?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    tenant,
                    obj["id"],
                    obj["created_at"],
                    obj.get("status") if kind == "batch" else None,
                    msgspec.json.encode(obj),
                ),
            )

    def _purge_sync(self, before: float) -> list[str]:
        marks = ",".join("?" * len(UNFINISHED))
        keep = f"kind = 'file' OR status NOT IN ({marks})"
        params = (before, *sorted(UNFINISHED))
        with self._connect() as conn:
            files = conn.execute(
                "SELECT id FROM batch_objects WHERE created < ? AND kind = 'file'", (before,)
            ).fetchall()
            conn.execute(f"DELETE FROM batch_objects WHERE created < ? AND ({keep})", params)
        return [file_id for (file_id,) in files]

    def _update_sync(
        self, tenant: str, batch_id: str, expect: frozenset[str], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")  # across processes: read and write as one
        try:
            row = conn.execute(
                "SELECT value FROM batch_objects WHERE kind = 'batch' AND tenant = ? AND id = ?",
                (tenant, batch_id),
            ).fetchone()
            batch = None if row is None else _decode(row[0])
            if batch is None or batch["status"] not in expect:
                conn.execute("ROLLBACK")
                return None
            batch.update(changes)
            conn.execute(
                "UPDATE batch_objects SET status = ?, value = ? "
                "WHERE kind = 'batch' AND tenant = ? AND id = ?",
                (batch["status"], msgspec.json.encode(batch), tenant, batch_id),
            )
            conn.execute("COMMIT")
            return batch
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._connect().execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        return self._connect().execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...]) -> bool:
        with self._connect() as conn:
            return conn.execute(sql, params).rowcount > 0

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, functools.partial(fn, *args))
        except (sqlite3.Error, OSError) as exc:
            raise StateUnavailable(f"the batch store {self.path} failed: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_file(self.path, _SCHEMA, autocommit=True)
        return self._conn


def _decode(value: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(value)
    return decoded
