"""The policy's ``batch`` section: how the Batch API (``/v1/files``, ``/v1/batches``) takes
work that can wait, and how much of the gateway that work may use."""

from __future__ import annotations

from pydantic import Field

from gateway.policy.types import Strict


class BatchConfig(Strict):
    """Limits of uploaded batch files and of the gateway's own batch runner."""

    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Largest JSONL file POST /v1/files takes."
    )
    max_lines: int = Field(default=50_000, ge=1, description="Most requests in one batch file.")
    concurrency: int = Field(
        default=8, ge=1, description="Lines of all batches the gateway runs at once, per replica."
    )
