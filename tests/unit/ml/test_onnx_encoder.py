"""The ONNX Runtime embedding path: same vectors as sentence-transformers, the cache of exports,
and the async API the pipeline calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from gateway.ml.embedder import CHARS_PER_TOKEN, DEFAULT_MODEL, Embedder, resolve_model
from gateway.ml.onnx_encoder import OnnxEncoder

pytestmark = pytest.mark.model

TEXTS = [
    "How do I get from Paris to London by train?",
    "What is the best phone to buy under 10k?",
    "hi",
    "",
    "  surrounded by spaces  ",
    "Transformers is a state-of-the-art machine learning library for Pytorch and JAX. " * 30,
    "Qu'est-ce que c'est ? 東京の天気は？",
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def onnx_embedder(exports: Path) -> Embedder:
    return Embedder.load(backend="onnx", cache_dir=exports)


def test_onnx_vectors_agree_with_sentence_transformers(onnx_embedder: Embedder) -> None:
    torch_embedder = Embedder.load(backend="torch", threads=0)
    a, b = onnx_embedder.embed_sync(TEXTS), torch_embedder.embed_sync(TEXTS)
    assert onnx_embedder.backend == "onnx" and torch_embedder.backend == "torch"
    assert a.shape == b.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(np.einsum("ij,ij->i", a, b).min()) >= 0.999


def test_a_batch_gives_each_text_its_own_vector(onnx_embedder: Embedder) -> None:
    together = onnx_embedder.embed_sync(TEXTS)
    alone = np.vstack([onnx_embedder.embed_sync([t]) for t in TEXTS])
    assert float(np.einsum("ij,ij->i", together, alone).min()) >= 0.9999


def test_the_export_is_cached(exports: Path, onnx_embedder: Embedder) -> None:
    files = list(exports.glob("*.onnx"))
    assert len(files) == 1
    before = files[0].stat().st_mtime_ns
    again = Embedder.load(backend="onnx", cache_dir=exports)
    assert again.backend == "onnx" and files[0].stat().st_mtime_ns == before
    assert again.signature == onnx_embedder.signature
    assert onnx_embedder.signature == {
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": 128,
        "quantized": False,
        "dim": 384,
    }


async def test_concurrent_embeds_are_batched(exports: Path) -> None:
    embedder = Embedder.load(cache_dir=exports)
    try:
        assert embedder.backend == "onnx"
        results = await asyncio.gather(*(embedder.embed([t]) for t in TEXTS * 4))
        expected = embedder.embed_sync(TEXTS * 4)
        for got, want in zip(results, expected, strict=True):
            assert got.shape == (1, 384)
            assert float(got[0] @ want) >= 0.9999
        assert embedder.forward_passes < len(TEXTS) * 4
    finally:
        await embedder.aclose()


def test_a_model_onnx_cannot_run_is_refused_or_falls_back(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]")
    with pytest.raises(ValueError, match="ONNX"):
        Embedder.load(str(tmp_path), backend="onnx", cache_dir=tmp_path)


def test_a_long_prompt_is_cut_before_it_is_tokenized(
    exports: Path, onnx_embedder: Embedder
) -> None:
    # The encoder alone tokenizes whole texts, as the embedder did before it cut them.
    whole = OnnxEncoder.load(
        resolve_model(DEFAULT_MODEL), max_seq_length=128, threads=1, cache_dir=exports
    )
    assert np.array_equal(onnx_embedder.embed_sync(TEXTS), whole.encode(TEXTS))
    document = "Notes on the history of the printing press, chapter by chapter. " * 16_000
    assert len(document) > 1_000_000
    limit = 128 * CHARS_PER_TOKEN
    cut = onnx_embedder.embed_sync([document])
    assert np.array_equal(cut, onnx_embedder.embed_sync([document[:limit]]))
    assert np.array_equal(cut, whole.encode([document]))  # its first 128 tokens are the same
