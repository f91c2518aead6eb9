"""An embeddings request's flow, in one short function (`run`), as `pipeline.run` is chat's.

Route (the named embeddings model, or the policy's first for ``auto``), check what the model
can do (``dimensions``; token ids and other fields for the bundled embedder), look every input
up in the exact cache, call the model for the inputs it lacks (retries and fallbacks as for
chat), write the ledger record, store the new vectors after the response, and answer OpenAI's
embeddings object in the encoding the client asked for.

Vectors are float32 throughout, as models compute them and as OpenAI's base64 carries them:
``float`` answers hold the same numbers as JSON (each float32 value written exactly, so with
more digits than OpenAI prints), ``base64`` answers the little-endian bytes.

Tokens: the provider's count; split among the inputs in proportion to their length when it
counts only the batch (each cached vector keeps its share, which a later hit reports); the
bundled embedder counts each input itself. A provider that sends no usage is estimated (UTF-8
bytes / 4) and the record marked so.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
import numpy as np

from gateway.errors import BadRequest
from gateway.pipeline import call, exact_cache, ledger, limits, route
from gateway.pipeline.exact_cache import CachedVector
from gateway.pipeline.normalize import EmbeddingInput
from gateway.pipeline.run import CACHE_ROUTE
from gateway.pipeline.turn import Completed, Turn
from gateway.policy.schema import ModelConfig
from gateway.providers import Embedded, Usage

BUNDLED_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
"""What the bundled embedder reads; ``user`` changes nothing; any other field is refused."""


async def run(turn: Turn) -> Completed:
    """Answer one embeddings request, each input from the cache or the model."""
    request, policy = turn.request, turn.runtime.policy
    decision = await route.decide_embeddings(turn)
    check(decision.model, policy.models[decision.model], request.body)
    inputs: list[EmbeddingInput] = request.body["input"]
    keys = exact_cache.vector_keys(request, decision.model, policy.cache.namespace)
    found = await exact_cache.lookup_vectors(turn, keys)
    missing = [i for i, entry in enumerate(found) if entry is None]
    model, estimated = decision.model, False
    fresh: list[tuple[str, CachedVector]] = []
    if missing:
        asked = [inputs[i] for i in missing]
        model, embedded = await call.embed(turn, decision, {**request.body, "input": asked})
        tokens, estimated = shares(embedded, asked)
        now = time.time()
        for i, vector, count in zip(missing, embedded.vectors, tokens, strict=True):
            new = CachedVector(embedded.model, count, vector.astype("<f4").tobytes(), now)
            found[i] = new
            fresh.append((keys[i], new))
    vectors = [entry for entry in found if entry is not None]
    called = sum(new.tokens for _, new in fresh)
    route_name = decision.route if missing else CACHE_ROUTE
    with turn.trace.stage("ledger"):
        served = sum(v.tokens for v in vectors) - called
        record = ledger.record_embeddings(
            turn, route_name, model, called=called, served=served, estimated=estimated
        )
        await limits.spend(turn, Usage(called, 0, called))
    turn.services.background.spawn(exact_cache.save_vectors(turn, fresh))
    body = answer(vectors, request.body.get("encoding_format"))
    return Completed(request, route_name, model, body, record.cost_usd, turn.cache)


def check(name: str, config: ModelConfig, body: Any) -> None:
    """Refuse what ``config``'s model cannot do, naming the field (before any model is called)."""
    dimensions = body.get("dimensions")
    if dimensions is not None and config.max_dimensions is None:
        raise BadRequest(f"The model {name!r} does not take 'dimensions'.", param="dimensions")
    if config.max_dimensions is not None and (dimensions or 0) > config.max_dimensions:
        raise BadRequest(
            f"The model {name!r} takes 'dimensions' up to {config.max_dimensions}.",
            param="dimensions",
        )
    if config.provider != "local_engine":
        return
    for i, item in enumerate(body["input"]):
        if not isinstance(item, str):
            raise BadRequest(
                f"The model {name!r} (the bundled embedder) takes texts, not token ids.",
                param=f"input[{i}]",
            )
    for field in body:
        if field not in BUNDLED_FIELDS:
            raise BadRequest(
                f"The model {name!r} (the bundled embedder) does not take {field!r}.",
                param=field,
            )


def shares(embedded: Embedded, inputs: list[EmbeddingInput]) -> tuple[list[int], bool]:
    """Each input's tokens, and whether they are estimated: the provider's own counts; else
    its total split in proportion to the inputs' lengths (largest remainders, so the shares
    add up to it); else an estimate of UTF-8 bytes / 4 each."""
    if embedded.tokens is not None:
        return list(embedded.tokens), False
    sizes = [len(i.encode()) if isinstance(i, str) else 4 * len(i) for i in inputs]
    if embedded.prompt_tokens is None:
        return [ledger.estimate_tokens(size) for size in sizes], True
    total, whole = embedded.prompt_tokens, max(1, sum(sizes))
    counts = [total * size // whole for size in sizes]
    by_remainder = sorted(range(len(sizes)), key=lambda i: -(total * sizes[i] % whole))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts, False


def answer(vectors: list[CachedVector], encoding: str | None) -> bytes:
    """OpenAI's embeddings object, ``float`` (the default) or ``base64``."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.vector).decode()
            if encoding == "base64"
            else np.frombuffer(v.vector, "<f4").tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    tokens = sum(v.tokens for v in vectors)
    return msgspec.json.encode(
        {
            "object": "list",
            "data": data,
            "model": vectors[-1].upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
