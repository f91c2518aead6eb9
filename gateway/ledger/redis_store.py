"""The shared ledger in Redis: an append-only stream of records plus rollups, for many replicas.

Keys (under a prefix, ``gateway:ledger:`` by default):

- ``stream``: every record (field ``r``, the record's JSON), in the order written;
- ``roll:{day}``: a hash per UTC day with one field per main group,
  ``["tenant","model","route","cache"]`` (JSON) → its `Sums` packed as integers (see `WRITE`);
- ``rolltag:{day}``: the same per tag group, field ``["k=v","tenant","model","route","cache"]``;
- ``spend:{tenant}:{day}``: the tenant's cost that day (nano-USD), for budgets; expires after
  ``spend_ttl_s``;
- ``days``: a sorted set of the days that have rollups;
- ``seen:{request_id}``: set when a record is written, for ``dedupe_ttl_s``.

One Lua script writes a record: ``SET seen NX``, and only if it was not set, ``XADD``, the
spend ``INCRBY`` and the rollup updates, atomically. A record written twice (a replay of the
spool, or a retry after a timeout whose write did in fact land) is counted once, as long as
the replay comes within ``dedupe_ttl_s``.

When Redis is down or slower than ``timeout_s``, batches go to the spool and the writer tries
Redis again with backoff (0.1 s doubling to 5 s); once it answers, the spool is replayed first.
Reports read the rollups of whole UTC days: their period is widened to whole days.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.ledger.base import SCAN_PAGE, Batch, Ledger, LedgerUnavailable
from gateway.ledger.record import LedgerRecord, encode
from gateway.ledger.report import Group
from gateway.ledger.spool import Spool
from gateway.ledger.sums import DAY_S, Sums, day_of, main_key, tag_keys

log = logging.getLogger(__name__)

# A group's sums are one hash field holding 14 integers, comma-separated: the `Sums` fields
# in order, each money field as two limbs (whole dollars, nano-dollars in [0, 1e9)). Lua
# numbers are doubles, exact to 2**53, so the limbs keep the sums exact however large they
# grow; the carry keeps the nano limb in range, also for negative savings.
WRITE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if ARGV[3] == '0' then
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[2])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[2])
end
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[4])
if ARGV[5] ~= '0' then
  redis.call('INCRBY', KEYS[5], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[6])
end
local K = 14
local delta = {}
for i = 1, K do delta[i] = tonumber(ARGV[7 + i]) end
local function add(hash, field)
  local v = {}
  local old = redis.call('HGET', hash, field)
  if old then
    local i = 1
    for x in string.gmatch(old, '[^,]+') do v[i] = tonumber(x) + delta[i]; i = i + 1 end
  else
    for i = 1, K do v[i] = delta[i] end
  end
  for _, lo in ipairs({7, 10, 14}) do
    local carry = math.floor(v[lo] / 1e9)
    v[lo] = v[lo] - carry * 1e9
    v[lo - 1] = v[lo - 1] + carry
  end
  for i = 1, K do v[i] = string.format('%d', v[i]) end
  redis.call('HSET', hash, field, table.concat(v, ','))
end
add(KEYS[3], ARGV[7])
for i = 8 + K, #ARGV do add(KEYS[4], ARGV[i]) end
return 1
"""
_NANO = 10**9
_ERRORS = (RedisError, OSError, TimeoutError)


class RedisLedger(Ledger):
    kind = "redis"

    def __init__(
        self,
        url: str,
        spool: Spool,
        *,
        key_prefix: str = "gateway:ledger:",
        timeout_s: float = 1.0,
        dedupe_ttl_s: int = 7 * 86_400,
        spend_ttl_s: int = 40 * 86_400,
        stream_maxlen: int = 0,
        max_connections: int = 8,
        client: aioredis.Redis | None = None,
        **options: Any,
    ) -> None:
        super().__init__(spool, **options)
        self.prefix = key_prefix
        self.timeout_s = timeout_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self.spend_ttl_s = spend_ttl_s
        self.stream_maxlen = stream_maxlen
        self._owns_client = client is None
        self.redis = client or aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # the writer retries, with the spool in between
            max_connections=max_connections,
        )
        self._script = self.redis.register_script(WRITE)
        self._last_spend: dict[tuple[str, int], int] = {}

    async def _open(self) -> None:
        return None  # the client connects on first use

    async def _close(self) -> None:
        if self._owns_client:
            await self.redis.aclose()

    # -- writing ----------------------------------------------------------------------------

    async def _store(self, batch: Batch) -> None:
        await self._send(batch.records)
        self._stored(batch, {})

    async def _send(self, records: Sequence[LedgerRecord]) -> None:
        # socket_timeout bounds each read; this bounds the whole batch (about 50 µs of Redis
        # time per record, with a wide margin). Leaving the pipeline's block releases (or,
        # after a timeout, drops) its connection.
        async with (
            asyncio.timeout(self.timeout_s * 2 + 0.002 * len(records)),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            for record in records:
                keys, args = self._script_call(record)
                await self._script(keys=keys, args=args, client=pipe)
            await pipe.execute()

    def _script_call(self, record: LedgerRecord) -> tuple[list[str], list[Any]]:
        sums = Sums.of(record)
        day, tenant, model, route, cache = main_key(record)
        p = self.prefix
        keys = [
            f"{p}seen:{record.request_id}",
            f"{p}stream",
            f"{p}roll:{day}",
            f"{p}rolltag:{day}",
            f"{p}spend:{tenant}:{day}",
            f"{p}days",
        ]
        args: list[Any] = [
            self.dedupe_ttl_s,
            encode(record),
            self.stream_maxlen,
            day,
            sums.cost,
            self.spend_ttl_s,
            _field([tenant, model, route, cache]),
            *_pack(sums),
        ]
        args += [_field([tag_key[1], tenant, model, route, cache]) for tag_key in tag_keys(record)]
        return keys, args

    # -- reading ----------------------------------------------------------------------------

    async def _spend_nanos(self, tenant: str, days: range) -> int:
        keys = [f"{self.prefix}spend:{tenant}:{day}" for day in days]
        try:
            if not self._up and time.monotonic() < self._retry_at:
                raise ConnectionError("Redis is down; not retried before its backoff")
            async with asyncio.timeout(self.timeout_s):
                values = await self.redis.mget(keys)
            stored = {day: int(v) if v else 0 for day, v in zip(days, values, strict=True)}
            self._last_spend.update({(tenant, day): v for day, v in stored.items()})
        except _ERRORS as exc:
            # Budgets keep working on what was last seen plus what this replica spent since.
            log.warning("ledger: spend from Redis failed (%r); using the last known", exc)
            stored = {day: self._last_spend.get((tenant, day), 0) for day in days}
        with self._lock:
            return sum(stored.values()) + self.unstored.nanos_locked(tenant, days)

    def _window(self, since: float, until: float) -> tuple[float, float]:
        return _whole_days(since, until)

    async def _groups(
        self,
        since: float,
        until: float,
        *,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...] = (),
    ) -> list[Group]:
        first, stop = day_of(since), day_of(until)
        try:
            async with asyncio.timeout(self.timeout_s * 10):
                found: list[Any] = await self.redis.zrange(
                    f"{self.prefix}days", first, stop - 1, byscore=True
                )
                days = [int(d) for d in found]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for day in days:
                        pipe.hgetall(f"{self.prefix}{'rolltag' if tagged else 'roll'}:{day}")
                    hashes = await pipe.execute()
        except _ERRORS as exc:
            raise LedgerUnavailable(f"The ledger's Redis cannot be read: {exc!r}.") from exc
        groups: list[Group] = []
        for day, fields in zip(days, hashes, strict=True):
            for raw, value in fields.items():
                key = msgspec.json.decode(raw)
                if tagged:
                    label, group_tenant, model, route, cache = key
                    if tag is not None and label != tag:
                        continue
                else:
                    label, (group_tenant, model, route, cache) = None, key
                if tenant is not None and group_tenant != tenant:
                    continue
                groups.append(Group(day, label, group_tenant, model, route, cache, _unpack(value)))
        return groups

    async def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        """From the stream, whose entry ids are write times: a record is written at or after its
        arrival (later when it was spooled through an outage), so the scan starts at ``since``
        and reads to the end. With ``stream_maxlen`` set, the stream holds the newest only."""
        start = f"{max(0, int(since * 1000))}-0"
        while True:
            page: list[Any] = (
                await self.redis.xrange(f"{self.prefix}stream", start, "+", count=SCAN_PAGE) or []
            )
            records = (msgspec.json.decode(fields[b"r"], type=LedgerRecord) for _, fields in page)
            found = [record for record in records if since <= record.time < until]
            if found:
                yield found
            if len(page) < SCAN_PAGE:
                return
            start = "(" + page[-1][0].decode()

    async def records(self, count: int = 1000, start: str = "-") -> list[LedgerRecord]:
        """Records from the stream in write order (for export, calibration and tests)."""
        entries: list[Any] = (
            await self.redis.xrange(f"{self.prefix}stream", start, "+", count=count) or []
        )
        return [msgspec.json.decode(fields[b"r"], type=LedgerRecord) for _, fields in entries]


def _field(parts: list[str]) -> bytes:
    return msgspec.json.encode(parts)


def _pack(sums: Sums) -> list[int]:
    """A record's sums as the script's 14 deltas (money split into dollars and nanos)."""
    cost_hi, cost_lo = divmod(sums.cost, _NANO)
    base_hi, base_lo = divmod(sums.base, _NANO)
    save_hi, save_lo = divmod(sums.save, _NANO)
    return [
        *(sums.n, sums.input, sums.cached, sums.output, sums.ptok, cost_hi, cost_lo),
        *(sums.nocost, base_hi, base_lo, sums.nobase, sums.both, save_hi, save_lo),
    ]


def _unpack(value: bytes) -> Sums:
    v = [int(x) for x in value.split(b",")]
    return Sums(
        *(v[0], v[1], v[2], v[3], v[4], v[5] * _NANO + v[6]),
        *(v[7], v[8] * _NANO + v[9], v[10], v[11], v[12] * _NANO + v[13]),
    )


def _whole_days(since: float, until: float) -> tuple[float, float]:
    """``[since, until)`` widened to whole UTC days: the period the daily rollups can report."""
    first = day_of(since) * DAY_S
    last = -(-until // DAY_S) * DAY_S
    return float(first), float(max(last, first + DAY_S))
