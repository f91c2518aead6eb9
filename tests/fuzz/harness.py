"""Fuzzing a running gateway from its own ``/openapi.json``, with schemathesis.

Every operation of the document is fuzzed in both of schemathesis' modes: ``positive`` (bodies
and parameters that fit the schema, which reach the pipeline and the model) and ``negative``
(ones that break it: wrong types, missing fields, out-of-range numbers). Each request carries a
key drawn for it: mostly the right one for the operation (a tenant's for ``/v1``, the admin's for
``/admin``), sometimes another tenant's, the wrong kind, a made-up one or none, so that the
refusals are fuzzed too.

A response fails when it is a 5xx, when an error is not in its door's shape (OpenAI's
``{"error": {"message", "type", "param", "code"}}``, or Anthropic's ``{"type": "error",
"error": {"type", "message"}}`` under ``/v1/messages``, as JSON), when a stream's events are not
JSON or the stream does not end as its API ends one (``[DONE]``, ``message_stop``, a terminal
``response.*`` event), or when it breaks the document (an undocumented status or content type, a
body that does not match its schema). Failures are collected, not raised, so that one run counts
everything; `Tally` holds the counts and each failure with a ``curl`` line to reproduce it.

`bench/fuzz/run.py` is the command that runs it at scale; ``tests/fuzz`` runs a few hundred.
"""

from __future__ import annotations

import contextlib
import copy
import json
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY, policy_text
from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread

MODELS = ["auto", "main", "backup"]
"""The fuzzing policy's model names: the fuzzed document's ``model`` is one of these in the
positive mode, so that requests get past the model check and reach the caches and the model."""
EMBEDDING_MODELS = ["auto", "embed"]
"""The same for ``/v1/embeddings``: the fuzzing policy's embeddings model."""
_DOOR_REQUESTS = (
    "ChatCompletionRequest",
    "AnthropicMessagesRequest",
    "AnthropicCountTokensRequest",
    "ResponseRequest",
    "CompletionRequest",
)
_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
_WRONG = "sk-not-a-key-of-this-gateway"


def fuzz_policy(primary: FakeUpstream, backup: FakeUpstream) -> str:
    """Two tenants and an admin key (tests.conftest's policy), the exact cache on, the server's
    gate and a tenant's rate limits in force (generous: their paths run, they refuse nothing)."""
    embed = textwrap.indent(
        textwrap.dedent(f"""\
        embed:
          provider: openai_compatible
          kind: embeddings
          base_url: {primary.base_url}
          model: upstream-embed
          price: {{input_per_mtok: 0.02, output_per_mtok: 0}}
        """),
        "  ",
    )
    text = policy_text(primary, backup).replace("models:\n", "models:\n" + embed, 1)
    return text + textwrap.dedent("""\
        cache:
          exact: {enabled: true, ttl: 1h}
        limits:
          max_concurrent_requests: 16
          max_queued: 64
        """)


@contextmanager
def gateway(data_dir: Path, redis_url: str | None = None) -> Iterator[str]:
    """A gateway on the fake upstreams (real HTTP servers on 127.0.0.1) with `fuzz_policy`, as
    tests.conftest's ``start_gateway`` starts one; yields its base URL."""
    primary, backup = FakeUpstream("primary").start(), FakeUpstream("backup").start()
    try:
        policy = data_dir / "policy.yaml"
        policy.write_text(fuzz_policy(primary, backup))
        settings = Settings(policy_path=policy, data_dir=data_dir / "data", redis_url=redis_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with ServerThread(create_app(settings)) as server:
            yield server.url
    finally:
        primary.stop()
        backup.stop()


@dataclass
class Failure:
    operation: str
    mode: str
    status: int
    problem: str
    curl: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.mode}] -> {self.status}: {self.problem}\n  {self.curl}"


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        lines = [f"requests: {self.requests}", f"5xx: {self.server_errors}"]
        statuses = sorted(self.statuses.items())
        lines.append("statuses: " + ", ".join(f"{s}: {n}" for s, n in statuses))
        lines += [f"  {op}: {n}" for op, n in sorted(self.per_operation.items())]
        lines.append(f"failures: {len(self.failures)}")
        return "\n".join(lines)


def fuzzed_document(base_url: str) -> dict[str, Any]:
    """The gateway's own document, with ``model`` narrowed to the policy's names."""
    document: dict[str, Any] = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    for name in _DOOR_REQUESTS:
        schemas[name]["properties"]["model"] = {"type": "string", "enum": MODELS}
    schemas["EmbeddingRequest"]["properties"]["model"] = {
        "type": "string",
        "enum": EMBEDDING_MODELS,
    }
    return document


def _keys(path: str) -> list[str | None]:
    """The keys a request to ``path`` is sent with, the right one most often."""
    if path.startswith("/v1/"):
        return [TENANT_KEY] * 4 + [OTHER_KEY] * 4 + [ADMIN_KEY, _WRONG, None]
    return [ADMIN_KEY] * 8 + [TENANT_KEY, _WRONG, None]


def fuzz(
    base_url: str,
    *,
    examples: int,
    chat_examples: int,
    seed_value: int = 0,
    tally: Tally | None = None,
    progress: Callable[[str], None] | None = None,
) -> Tally:
    """One round: each operation in each mode, ``examples`` cases (``chat_examples`` for the
    chat door, where the bugs would be); hypothesis stops early where a space has fewer."""
    tally = tally or Tally()
    schema = schemathesis.openapi.from_dict(fuzzed_document(base_url))
    schema.validate()
    session = requests.Session()
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            budget = _budget(operation, examples, chat_examples)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                before = tally.requests
                _fuzz_one(operation, mode, budget, seed_value, base_url, session, tally)
                if progress is not None:
                    progress(f"{operation.label} [{mode.value}]: {tally.requests - before}")
    finally:
        session.close()
    return tally


def _budget(operation: Any, examples: int, chat_examples: int) -> int:
    """The chat door gets the most cases, the other doors a third as many, the rest few."""
    if operation.path == "/v1/chat/completions":
        return chat_examples
    if operation.method.upper() == "POST" and operation.path.startswith("/v1/"):
        return max(examples, chat_examples // 3)
    return examples


def _fuzz_one(
    operation: Any,
    mode: GenerationMode,
    budget: int,
    seed_value: int,
    base_url: str,
    session: requests.Session,
    tally: Tally,
) -> None:
    @seed(seed_value)
    @settings(
        max_examples=budget,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        key=st.sampled_from(_keys(operation.path)),
    )
    def run(case: Any, key: str | None) -> None:
        case.headers.pop("authorization", None)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        tally.requests += 1
        tally.statuses[response.status_code] += 1
        tally.per_operation[operation.label] += 1
        for problem in _problems(case, response):
            tally.failures.append(
                Failure(
                    operation.label,
                    mode.value,
                    response.status_code,
                    problem,
                    case.as_curl_command(headers=headers, base_url=base_url),
                )
            )

    # Unsatisfiable: nothing to break (the negative mode of an operation without input).
    with contextlib.suppress(Unsatisfiable):
        run()


def _problems(case: Any, response: Any) -> Iterator[str]:
    status = response.status_code
    if status >= 500:
        yield f"server error: {response.text[:300]}"
    content_type = (response.headers.get("content-type") or [""])[0]
    anthropic = case.path.startswith("/v1/messages")
    if status >= 400:
        yield from _error_shape(response.content, content_type, anthropic)
    elif content_type.startswith("text/event-stream"):
        yield from _stream_shape(response.content, case.path)
    try:
        case.validate_response(response, checks=_CHECKS)
    except FailureGroup as group:
        for failure in group.exceptions:
            yield f"breaks the document: {failure.title}: {failure.message[:300]}"


def _error_shape(body: bytes, content_type: str, anthropic: bool = False) -> Iterator[str]:
    if not content_type.startswith("application/json"):
        yield f"an error as {content_type!r}, not JSON: {body[:200]!r}"
        return
    try:
        document = json.loads(body)
        error = document["error"]
    except (ValueError, KeyError, TypeError):
        yield f"an error not in its API's shape: {body[:200]!r}"
        return
    if anthropic:
        if not (
            document.get("type") == "error"
            and isinstance(error, dict)
            and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str)
        ):
            yield f"an error not in Anthropic's shape: {body[:200]!r}"
        return
    if not (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
        and {"param", "code"} <= error.keys()
        and all(error[k] is None or isinstance(error[k], str) for k in ("param", "code"))
    ):
        yield f"an error not in OpenAI's shape: {body[:200]!r}"


_LAST_EVENTS = {
    "/v1/messages": ({"message_stop", "error"}, True),
    "/v1/responses": ({"response.completed", "response.incomplete", "response.failed"}, False),
}
"""The events a stream of each door may end with, and whether its errors are Anthropic's."""


def _stream_shape(body: bytes, path: str) -> Iterator[str]:
    events = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    last, anthropic = _LAST_EVENTS.get(path, (None, False))
    if last is None and (not events or events[-1] != b"[DONE]"):
        yield f"a stream that does not end with [DONE]: {body[-200:]!r}"
    payloads = events[:-1] if last is None else events
    for event in payloads:
        try:
            chunk = json.loads(event)
        except ValueError:
            yield f"a stream event that is not JSON: {event[:200]!r}"
            return
        if "error" in chunk and chunk.get("type") != "response.failed":
            yield from _error_shape(event, "application/json", anthropic)
    if last is not None and (not payloads or json.loads(payloads[-1]).get("type") not in last):
        yield f"a stream that does not end with one of {sorted(last)}: {body[-200:]!r}"
