"""What the batch tests share: a policy with the Batch API's models, and the SDK's round trip
(upload, create, poll, download)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.conftest import Gateway, policy_text
from tests.fake_upstream import FakeUpstream

EMBEDDER = """\
  embed-small:
    provider: openai_compatible
    kind: embeddings
    base_url: {base_url}
    model: text-embedding-3-small
    price: {{input_per_mtok: 0.02, batch_discount: 0.5}}
    retries: {{max_attempts: 1}}
"""
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def batch_policy(
    primary: FakeUpstream,
    backup: FakeUpstream,
    *,
    concurrency: int = 16,
    extra_routes: str = "",
) -> str:
    """The shared test policy with an embeddings model, the main model at half price for
    batches, and the batch runner's concurrency."""
    text = policy_text(primary, backup, extra_routes=extra_routes)
    text = text.replace("models:\n", "models:\n" + EMBEDDER.format(base_url=primary.base_url), 1)
    text = text.replace("output_per_mtok: 10}", "output_per_mtok: 10, batch_discount: 0.5}", 1)
    return text + f"batch: {{concurrency: {concurrency}}}\n"


@pytest.fixture
def batch_gateway(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> Gateway:
    return start_gateway(batch_policy(primary, backup))


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "auto", "messages": [{"role": "user", "content": text}], **body},
    }


def responses_lines(count: int) -> list[dict[str, Any]]:
    """``count`` /v1/responses lines, r0, r1, ... (not stored: a batch line's Response is in
    the output file)."""
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "auto", "input": f"responses question {i}", "store": False},
        }
        for i in range(count)
    ]


def embedding_line(custom_id: str, text: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "embed-small", "input": text},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@dataclass
class Finished:
    batch: Batch
    output: dict[str, dict[str, Any]]
    """Result lines of the output file by custom_id."""
    errors: dict[str, dict[str, Any]]
    """Result lines of the error file by custom_id."""
    custom_ids: list[str]
    """Every custom_id of both files, in file order (a repeat would show here)."""


def upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    return client.files.create(file=("lines.jsonl", io.BytesIO(jsonl(lines))), purpose="batch").id


def create(client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str) -> Batch:
    return client.batches.create(
        input_file_id=upload(client, lines),
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def wait(client: openai.OpenAI, batch_id: str, timeout_s: float = 120.0) -> Batch:
    """Poll until the batch is in a final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.1)


def results(client: openai.OpenAI, batch: Batch) -> Finished:
    output: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for file_id, into in ((batch.output_file_id, output), (batch.error_file_id, errors)):
        if file_id is None:
            continue
        for raw in client.files.content(file_id).text.splitlines():
            entry = json.loads(raw)
            into[entry["custom_id"]] = entry
            order.append(entry["custom_id"])
    return Finished(batch, output, errors, order)


def run_batch(client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str) -> Finished:
    """Upload, create, poll and download, as a client of the SDK does."""
    created = create(client, lines, endpoint)
    assert created.status == "validating"
    return results(client, wait(client, created.id))
