"""What the Batch API's handlers and the runner share, owned by the app's lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.batch.files import FileStore
from gateway.batch.store import BatchStore


@dataclass(frozen=True, slots=True)
class Batches:
    store: BatchStore
    """Files' and batches' objects, and each batch's lines."""
    files: FileStore
    """The bytes of uploaded and produced files."""
    nudge: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a batch is created or cancelled, so this replica's runner looks at once
    instead of at its next poll."""
