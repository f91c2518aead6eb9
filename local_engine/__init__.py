"""The cheap local tier: an OpenAI-compatible engine over transformers' continuous batching.

``from local_engine import LocalEngine, EngineError`` is cheap: the names are imported on first
use, so importing this package does not import torch or transformers.

Modules: `engine` (LocalEngine: admission, decoding, stop sequences), `loader` (a model name to
a backend, tokenizer and defaults), `backends` (the batching backends: transformers, vLLM),
`sampling` (per-request sampling processors), `models` (model resolution, loading and the
one-time GGUF conversion), `protocol` (the OpenAI wire format), `textstream`
(incremental detokenization, stop matching), `metrics` (Prometheus), `server` (the ASGI app),
`cli` (``local-engine serve``), `errors` (EngineError).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_engine.engine import LocalEngine
    from local_engine.errors import EngineError, ModelLoadError

__all__ = ["EngineError", "LocalEngine", "ModelLoadError"]

_HOMES = {
    "LocalEngine": "local_engine.engine",
    "EngineError": "local_engine.errors",
    "ModelLoadError": "local_engine.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'local_engine' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
