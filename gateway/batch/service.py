"""What the Batch API's handlers and the runner share, owned by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from gateway.batch.files import FileStore
from gateway.batch.redis_store import RedisBatchStore
from gateway.batch.store import BatchStore, SQLiteBatchStore


@dataclass(frozen=True, slots=True)
class Batches:
    store: BatchStore
    """Files' and batches' objects, and each batch's lines."""
    files: FileStore
    """The bytes of uploaded and produced files."""
    nudge: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a batch is created or cancelled, so this replica's runner looks at once
    instead of at its next poll."""


def open_store(redis_url: str | None, directory: Path) -> BatchStore:
    """Redis when configured, else ``state.sqlite3`` in ``directory``."""
    if redis_url:
        return RedisBatchStore(redis_url)
    return SQLiteBatchStore(directory / "state.sqlite3")
