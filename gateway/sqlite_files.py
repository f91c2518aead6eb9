"""The gateway's embedded SQLite files (the ledger, batches, stored responses, router labels),
all opened the same way."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal


def open_file(
    path: Path,
    schema: str,
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    autocommit: bool = False,
) -> sqlite3.Connection:
    """A connection to ``path`` (its folder made), with the tables of ``schema``.

    WAL, so that readers never wait for the writer; a 10 s wait for another process's lock
    rather than an immediate error; usable from any one thread at a time (each store keeps its
    connection on its own thread). ``synchronous``: FULL when a commit must be on disk before
    it counts (the ledger), NORMAL otherwise. ``autocommit``: no implicit transactions (the
    store begins its own); else sqlite3's default, where ``with conn`` makes one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    isolation: Literal["DEFERRED"] | None = None if autocommit else "DEFERRED"
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=isolation)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.executescript(schema)
    return conn
