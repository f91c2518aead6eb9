"""The bundled embedding model in the gateway's own process (``provider: local_engine`` with
``kind: embeddings``): all-MiniLM-L6-v2, offline, so ``gateway serve`` answers
``/v1/embeddings`` with no other service.

Its vectors are the model's own, as sentence-transformers gives them: the model's full
sequence length (256 word pieces, from its ``sentence_bert_config.json``; a longer text is
truncated there, as sentence-transformers does), fp32, mean-pooled, unit length. That is why it
is an `Embedder` of its own, not the semantic cache's: that one reads 128 pieces to stay fast,
and may be quantized. The runtime and the micro-batching are the same
(:mod:`gateway.ml.embedder`): ONNX Runtime in a worker thread, off the event loop. A request's
inputs go in slices of the embedder's ``max_batch``, so a request of 2048 long texts never
becomes one forward pass that needs gigabytes for its attention matrices.

``prompt_tokens`` is exact: each input's word pieces as the model read them (its tokenizer,
special tokens included, truncated as the model truncates).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np

from gateway.ml.embedder import Embedder, clip, resolve_model
from gateway.policy.schema import ModelConfig
from gateway.providers import Embedded, Reply, unsupported

_DEFAULT_MAX_SEQ_LENGTH = 256
"""all-MiniLM-L6-v2's, when the model directory does not say."""


class LocalEmbedder:
    def __init__(self, embedder: Embedder, tokenizer: Any, name: str) -> None:
        self._embedder = embedder
        self._tokenizer = tokenizer
        self._name = name

    @classmethod
    async def start(cls, config: ModelConfig, cache_dir: Path) -> LocalEmbedder:
        """Load the model (in a thread: it reads files, and exports to ONNX once)."""
        return await asyncio.to_thread(cls._load, config.model, cache_dir)

    @classmethod
    def _load(cls, model: str, cache_dir: Path) -> LocalEmbedder:
        from tokenizers import Tokenizer

        directory = Path(resolve_model(model))
        max_seq_length = _max_seq_length(directory)
        embedder = Embedder.load(model, max_seq_length=max_seq_length, cache_dir=cache_dir)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_seq_length)
        tokenizer.no_padding()  # its tokenizer.json pads every text to 128
        return cls(embedder, tokenizer, directory.name if directory.is_dir() else model)

    async def embed(self, body: dict[str, Any]) -> Embedded:
        texts = body["input"]
        if not all(isinstance(t, str) for t in texts):
            raise unsupported("token ids")
        step = self._embedder.max_batch
        parts = await asyncio.gather(
            *(self._embedder.embed(texts[i : i + step]) for i in range(0, len(texts), step))
        )
        tokens = await asyncio.to_thread(self._count, texts)
        return Embedded(np.vstack(parts), self._name, sum(tokens), tokens)

    def _count(self, texts: list[str]) -> tuple[int, ...]:
        """Each text's word pieces as the model reads them (clipped first, as the embedder
        clips, so a pasted document is not tokenized whole)."""
        limit = self._embedder.max_seq_length
        encodings = self._tokenizer.encode_batch([clip(t, limit) for t in texts])
        return tuple(len(e.ids) for e in encodings)

    async def complete(self, body: dict[str, Any]) -> Reply:
        raise unsupported("chat")

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        return _refused()

    async def aclose(self) -> None:
        await self._embedder.aclose()


async def _refused() -> AsyncGenerator[Any, None]:
    """A stream that fails at its first chunk, as a provider's failed stream does."""
    raise unsupported("chat")
    yield  # never reached; a yield makes this an async generator


def _max_seq_length(directory: Path) -> int:
    config = directory / "sentence_bert_config.json"
    if not config.is_file():
        return _DEFAULT_MAX_SEQ_LENGTH
    return int(json.loads(config.read_text()).get("max_seq_length", _DEFAULT_MAX_SEQ_LENGTH))
