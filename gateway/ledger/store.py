"""`open_ledger`: the store the settings ask for: PostgreSQL when a ledger URL is configured,
else Redis when a Redis URL is, else SQLite.

The one module that knows every store. `Ledger` and `LedgerUnavailable` live in
`gateway.ledger.base` and are re-exported here for the code that opens a ledger and types
against it.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from gateway.ledger.base import Ledger, LedgerUnavailable
from gateway.ledger.postgres_store import PostgresLedger
from gateway.ledger.redis_store import RedisLedger
from gateway.ledger.spool import Spool
from gateway.ledger.sqlite_store import SQLiteLedger

__all__ = ["Ledger", "LedgerUnavailable", "open_ledger"]


def open_ledger(
    redis_url: str | None,
    data_dir: Path,
    *,
    ledger_url: str | None = None,
    replica: str | None = None,
    key_prefix: str = "gateway:ledger:",
    **options: Any,
) -> Ledger:
    """The PostgreSQL ledger at ``ledger_url``, else the Redis ledger when ``redis_url`` is
    given, else the SQLite file under ``data_dir``.

    Nothing is opened until `Ledger.start` (or the first report); the spool lives in
    ``data_dir/ledger-spool/`` either way, in files of this replica's own (``replica``, by
    default the host name; see `gateway.ledger.spool`). ``options`` go to the writer
    (`gateway.ledger.writer.Writer`: ``max_queued``, ``store_timeout_s``, ...) and the store.
    """
    spool = Spool(data_dir / "ledger-spool", replica or socket.gethostname())
    if ledger_url:
        return PostgresLedger(ledger_url, spool, **options)
    if redis_url:
        return RedisLedger(redis_url, spool, key_prefix=key_prefix, **options)
    return SQLiteLedger(data_dir / "ledger.sqlite3", spool, **options)
