"""The policy's ``batch`` section: how the Batch API (``/v1/files``, ``/v1/batches``) takes
work that can wait, and how much of the gateway that work may use.

Batch work yields to live requests in two ways. A model that schedules by priority (the local
engine, or ``priority_scheduling: true``) gets batch lines at ``priority`` and pauses them while
a live request runs. And while a live request is in flight (or was, within ``live_quiet_s``),
the runner keeps only as many lines in flight as keep live requests within
``live_latency_bound`` of their speed alone (`gateway.batch.pace`). bench/batch measures what
it costs a live request's p50 and what it leaves of the batch's throughput.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from gateway.policy.types import Duration, Seconds, Strict

BATCH_TAG = "batch"
"""The reserved ``x-gateway-tags`` key that carries a batch line's batch id: its ledger record
is grouped by it (``gateway report --by batch``) and ``when: {batch: true}`` matches it. A live
request may not send it."""


class BatchConfig(Strict):
    """Limits of uploaded batch files and of the gateway's own batch runner."""

    max_file_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Largest JSONL file POST /v1/files takes."
    )
    max_lines: int = Field(default=50_000, ge=1, description="Most requests in one batch file.")
    concurrency: int = Field(
        default=8, ge=1, description="Lines of all batches the gateway runs at once, per replica."
    )
    concurrency_while_live: int = Field(
        default=1,
        ge=0,
        description="Lines run at once while live requests are in flight (0: batch work "
        "pauses for them).",
    )
    live_latency_bound: float | None = Field(
        default=1.5,
        ge=1.0,
        description="How many times slower than alone a live request may be while batch "
        "lines run: the runner measures it and raises or lowers the lines it runs while live "
        "traffic is active (from concurrency_while_live, up to concurrency) to stay within it. "
        "null: concurrency_while_live, fixed.",
    )
    live_quiet_s: Seconds = Field(
        default=0.5,
        description="How long after the last live request batch work stays at "
        "concurrency_while_live.",
    )
    priority: int = Field(
        default=1,
        ge=1,
        description="The priority batch lines carry to models that schedule by it (provider "
        "local_engine, or priority_scheduling: true); live requests carry none (0), so such a "
        "model runs them first and pauses batch lines while they are in flight.",
    )
    retention: Duration = Field(
        default=30 * 86400.0,
        ge=2 * 86400.0,
        description="Files and finished batches older than this are deleted (at least 2d, "
        "past any batch's 24h window); seconds, or 7d, 30d.",
    )


class UpstreamBatch(Strict):
    """How batch lines routed to a model go to its provider's own batch API as one upstream
    batch (OpenAI's /v1/batches, Anthropic's Message Batches, Bedrock's batch inference),
    billed at its batch price."""

    flush_s: Seconds = Field(
        default=2.0,
        description="A gateway batch's lines are sent upstream once none has joined for this "
        "long (or max_lines have).",
    )
    max_lines: int = Field(
        default=50_000, ge=1, description="Most lines in one upstream batch (OpenAI's limit)."
    )
    poll_s: Seconds = Field(
        default=10.0, description="First wait before asking the upstream batch's status."
    )
    poll_max_s: Seconds = Field(
        default=300.0, description="Longest wait between two status checks (backoff doubles)."
    )
    s3_uri: Annotated[str, StringConstraints(pattern=r"^s3://[^/]+(/.*)?$")] | None = Field(
        default=None,
        description="bedrock: where batch inference's input and output files go "
        "(s3://bucket/prefix); the model's aws credentials must be able to write and read it.",
    )
    role_arn: str | None = Field(
        default=None,
        description="bedrock: the service role batch inference runs as (it reads and writes "
        "s3_uri).",
    )
    min_lines: int = Field(
        default=1,
        ge=1,
        description="A smaller group is called line by line instead (Bedrock refuses jobs "
        "under its per-model minimum, 100 records for most models: set it so).",
    )
    control_url: Annotated[str, StringConstraints(pattern=r"^https?://")] | None = Field(
        default=None,
        description="bedrock: the control plane (default https://bedrock.{region}.amazonaws.com).",
    )
    s3_url: Annotated[str, StringConstraints(pattern=r"^https?://")] | None = Field(
        default=None,
        description="bedrock: the S3 endpoint, path-style (default "
        "https://s3.{region}.amazonaws.com).",
    )
