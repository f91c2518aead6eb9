"""Where the router's labels from the gateway's own traffic live: Redis when configured, else a
SQLite file in the data dir. They stay with the deployment; nothing here is ever shipped.

The ledger never holds prompt text, so a label cannot be turned back into a training row from
the ledger alone. What the difficulty head reads is kept instead, per request it may learn
from: the request's embedding and its dense features (``gateway.ml.head.dense_features``),
with the model that answered and the difficulty it was routed by (a `Sample`). A label then
joins it by request id: a shadow comparison's judged scores of the small and the large model's
answers, or a client's feedback (``POST /v1/feedback``) on the answer it got. Rows are keyed by
request id, the same id as the ledger record, so a label and the record's cost can be read side
by side.

A sample remembers its tenant: feedback names the tenant's key, and a tenant can only rate its
own requests (another tenant's id is simply not found). The store also sums each tenant's shadow
spend per UTC day, which the shadow stage checks against the policy's ``daily_budget_usd``.

Writes come from background work (after the response), so a plain thread hop per write is
enough here; the request path never waits on this store.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt
import redis.asyncio as redis

from gateway.ledger.sums import day_of
from gateway.sqlite_files import open_file

T = TypeVar("T")
NANOS = Decimal(10**9)
F32 = npt.NDArray[np.float32]


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """What the head read for one request, kept so that a later label can train it."""

    request_id: str
    tenant: str
    time: float
    model: str
    """The policy model that answered the client."""
    difficulty: float
    vector: bytes
    """The request's embedding, float32."""
    dense: bytes
    """Its dense features (``Features.vector()`` and the word-problem features), float32."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """A shadow comparison's outcome: who answered and judged, and the two grades in [0, 1]."""

    large_model: str
    judge: str
    small_score: float
    """The judge's grade of the answer the client got (the small model's)."""
    large_score: float
    """The judge's grade of the large model's answer to the same request."""


class Labelled(msgspec.Struct, frozen=True, kw_only=True):
    """A sample with whatever labels it has: a shadow comparison's, a client's feedback."""

    sample: Sample
    large_model: str | None = None
    judge: str | None = None
    small_score: float | None = None
    """The judge's grade of the answer the client got, in [0, 1]."""
    large_score: float | None = None
    """The judge's grade of the large model's answer to the same request, in [0, 1]."""
    feedback: float | None = None
    """The client's score of the answer it got, in [0, 1]."""
    feedback_text: str | None = None

    @property
    def vector(self) -> F32:
        return np.frombuffer(self.sample.vector, np.float32)

    @property
    def dense(self) -> F32:
        return np.frombuffer(self.sample.dense, np.float32)


class LabelStore(Protocol):
    async def keep(self, sample: Sample) -> None: ...
    async def judged(self, request_id: str, verdict: Verdict) -> None:
        """Attach a shadow comparison's verdict to a kept request (none kept: nothing)."""
        ...

    async def feedback(self, tenant: str, request_id: str, score: float, text: str | None) -> bool:
        """Attach a client's score to its own request; False when the tenant has no such one."""
        ...

    async def add_spend(self, tenant: str, at: float, usd: Decimal) -> None: ...
    async def spend(self, tenant: str, at: float) -> Decimal:
        """The tenant's shadow spend on the UTC day of ``at``."""
        ...

    async def labelled(self, since: float = 0.0) -> list[Labelled]:
        """Samples of requests since ``since`` that have a label, oldest first."""
        ...

    async def aclose(self) -> None: ...


def open_labels(redis_url: str | None, data_dir: Path) -> LabelStore:
    """The Redis store when a URL is configured, else the SQLite file under ``data_dir``."""
    if redis_url:
        return RedisLabels(redis_url)
    return SQLiteLabels(data_dir / "router-labels.sqlite3")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    difficulty REAL NOT NULL,
    vector BLOB NOT NULL,
    dense BLOB NOT NULL,
    large_model TEXT,
    judge TEXT,
    small_score REAL,
    large_score REAL,
    feedback REAL,
    feedback_text TEXT
);
CREATE INDEX IF NOT EXISTS samples_time ON samples (time);
CREATE TABLE IF NOT EXISTS shadow_spend (
    tenant TEXT NOT NULL,
    day INTEGER NOT NULL,
    nanos INTEGER NOT NULL,
    PRIMARY KEY (tenant, day)
);
"""
_LABEL_COLUMNS = ("large_model", "judge", "small_score", "large_score", "feedback", "feedback_text")


class SQLiteLabels:
    """Labels in one SQLite file (WAL), opened on first use; file work on one thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labels")

    async def keep(self, sample: Sample) -> None:
        await self._run(
            "INSERT OR IGNORE INTO samples (request_id, tenant, time, model, difficulty, vector, "
            "dense) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                sample.request_id,
                sample.tenant,
                sample.time,
                sample.model,
                sample.difficulty,
                sample.vector,
                sample.dense,
            ),
        )

    async def judged(self, request_id: str, verdict: Verdict) -> None:
        await self._run(
            "UPDATE samples SET large_model = ?, judge = ?, small_score = ?, large_score = ? "
            "WHERE request_id = ?",
            (*msgspec.structs.astuple(verdict), request_id),
        )

    async def feedback(self, tenant: str, request_id: str, score: float, text: str | None) -> bool:
        changed = await self._run(
            "UPDATE samples SET feedback = ?, feedback_text = ? "
            "WHERE request_id = ? AND tenant = ?",
            (score, text, request_id, tenant),
        )
        return changed > 0

    async def add_spend(self, tenant: str, at: float, usd: Decimal) -> None:
        await self._run(
            "INSERT INTO shadow_spend (tenant, day, nanos) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant, day) DO UPDATE SET nanos = nanos + excluded.nanos",
            (tenant, day_of(at), int(usd * NANOS)),
        )

    async def spend(self, tenant: str, at: float) -> Decimal:
        rows = await self._query(
            "SELECT nanos FROM shadow_spend WHERE tenant = ? AND day = ?", (tenant, day_of(at))
        )
        return Decimal(rows[0][0]) / NANOS if rows else Decimal(0)

    async def labelled(self, since: float = 0.0) -> list[Labelled]:
        rows = await self._query(
            "SELECT request_id, tenant, time, model, difficulty, vector, dense, "
            f"{', '.join(_LABEL_COLUMNS)} FROM samples WHERE time >= ? "
            "AND (small_score IS NOT NULL OR feedback IS NOT NULL) ORDER BY time, request_id",
            (since,),
        )
        names = _SAMPLE_COLUMNS + _LABEL_COLUMNS
        return [_labelled(dict(zip(names, row, strict=True))) for row in rows]

    async def aclose(self) -> None:
        if self._db is not None:
            await self._in_thread(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def _run(self, sql: str, args: tuple[Any, ...]) -> int:
        def write() -> int:
            db = self._connection()
            with db:
                return db.execute(sql, args).rowcount

        return await self._in_thread(write)

    async def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return await self._in_thread(lambda: self._connection().execute(sql, args).fetchall())

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_file(self._path, _SCHEMA)
        return self._db


_SAMPLE_COLUMNS = ("request_id", "tenant", "time", "model", "difficulty", "vector", "dense")


def _labelled(fields: dict[str, Any]) -> Labelled:
    sample = Sample(**{k: fields[k] for k in _SAMPLE_COLUMNS})
    labels = {k: fields[k] for k in _LABEL_COLUMNS if fields.get(k) is not None}
    for k in ("small_score", "large_score", "feedback"):
        if k in labels:
            labels[k] = float(labels[k])
    return Labelled(sample=sample, **labels)


class RedisLabels:
    """Labels in Redis: a hash per request (``{prefix}r:{id}``), a sorted set of the request
    ids by time, and a counter of shadow spend per tenant and UTC day (nano-dollars)."""

    def __init__(self, url: str, prefix: str = "gw:labels:") -> None:
        self._redis: Any = redis.Redis.from_url(url)
        self._prefix = prefix

    def _key(self, request_id: str) -> str:
        return f"{self._prefix}r:{request_id}"

    async def keep(self, sample: Sample) -> None:
        key = self._key(sample.request_id)
        fields = {k: _redis_value(getattr(sample, k)) for k in _SAMPLE_COLUMNS}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.zadd(f"{self._prefix}time", {sample.request_id: sample.time})
            await pipe.execute()

    async def judged(self, request_id: str, verdict: Verdict) -> None:
        key = self._key(request_id)
        if await self._redis.exists(key):
            await self._redis.hset(key, mapping=msgspec.structs.asdict(verdict))

    async def feedback(self, tenant: str, request_id: str, score: float, text: str | None) -> bool:
        key = self._key(request_id)
        owner = await self._redis.hget(key, "tenant")
        if owner is None or owner.decode() != tenant:
            return False
        fields: dict[str, Any] = {"feedback": score}
        if text is not None:
            fields["feedback_text"] = text
        await self._redis.hset(key, mapping=fields)
        return True

    async def add_spend(self, tenant: str, at: float, usd: Decimal) -> None:
        await self._redis.incrby(self._spend_key(tenant, at), int(usd * NANOS))

    async def spend(self, tenant: str, at: float) -> Decimal:
        value = await self._redis.get(self._spend_key(tenant, at))
        return Decimal(int(value)) / NANOS if value is not None else Decimal(0)

    def _spend_key(self, tenant: str, at: float) -> str:
        return f"{self._prefix}spend:{tenant}:{day_of(at)}"

    async def labelled(self, since: float = 0.0) -> list[Labelled]:
        ids = await self._redis.zrangebyscore(f"{self._prefix}time", since, "+inf")
        out = []
        for request_id in ids:
            raw = await self._redis.hgetall(self._key(request_id.decode()))
            fields = {k.decode(): v for k, v in raw.items()}
            if "small_score" not in fields and "feedback" not in fields:
                continue
            out.append(_labelled(_from_redis(fields)))
        return out

    async def aclose(self) -> None:
        await self._redis.aclose()


def _redis_value(value: Any) -> Any:
    return value if isinstance(value, (bytes, str, int, float)) else str(value)


def _from_redis(fields: dict[str, bytes]) -> dict[str, Any]:
    """Hash fields back to their types: blobs stay bytes, numbers are parsed, text decoded."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if k in ("vector", "dense"):
            out[k] = v
        elif k in ("time", "difficulty", "small_score", "large_score", "feedback"):
            out[k] = float(v)
        else:
            out[k] = v.decode()
    return out
