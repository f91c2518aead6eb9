"""Fixtures for the engine tests: the real SmolLM2 model, converted once and loaded once.

The GGUF → safetensors conversion (about a minute on two cores) is cached in pytest's cache
directory (``.pytest_cache/d/local-engine-models``), or in ``$LOCAL_ENGINE_TEST_MODELS`` when
set, so only the first run on a clean checkout pays for it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from local_engine import models
from local_engine.engine import LocalEngine

MAX_TOKENS = 20
PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "Explain in a sentence why the sky is blue.",
    "Say hello in Spanish.",
    "Give me a fun fact about cats, please, in one short sentence only.",
)


# Greedy SmolLM2 answers this with hundreds of tokens: a request that holds its slot.
LONG_PROMPT = "Count from 1 to 300, separated by commas."


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@dataclass
class Smol:
    """The model and tokenizer shared by every engine test, with `generate()` references."""

    model: Any
    tokenizer: Any
    path: Path
    _references: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def prompt_ids(self, prompt: str) -> list[int]:
        return list(
            self.tokenizer.apply_chat_template(
                messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    def reference(self, prompt: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        """Greedy completion token ids from plain `model.generate()` (cached)."""
        key = (prompt, max_tokens)
        if key not in self._references:
            import torch

            ids = self.prompt_ids(prompt)
            with torch.inference_mode():
                out = self.model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.eos_token_id,
                )
            self._references[key] = out[0, len(ids) :].tolist()
        return self._references[key]

    def reference_text(self, prompt: str, max_tokens: int = MAX_TOKENS) -> str:
        return str(
            self.tokenizer.decode(self.reference(prompt, max_tokens), skip_special_tokens=True)
        )


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("LOCAL_ENGINE_TEST_MODELS")
    if configured:
        return Path(configured)
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("local-engine-models"))
    return tmp_path_factory.mktemp("local-engine-models")


@pytest.fixture(scope="session")
def smol(model_cache: Path) -> Smol:
    source = models.resolve(models.DEFAULT_MODEL)
    path = Path(models.local_path(source, model_cache))
    model, tokenizer = models.load_pretrained(str(path), "cpu", models.pick_dtype("float32", "cpu"))
    return Smol(model, tokenizer, path)


@pytest.fixture
async def make_engine(smol: Smol) -> AsyncIterator[Callable[..., Any]]:
    """Start engines over the shared model; each is closed at the end of the test."""
    started: list[LocalEngine] = []

    async def make(model: Any = None, **options: Any) -> LocalEngine:
        """``model``: another model than the shared one (a quantized copy)."""
        options.setdefault("kv_cache_tokens", 16384)
        engine = LocalEngine.from_model(
            smol.model if model is None else model,
            smol.tokenizer,
            model_name="smollm2-135m-instruct",
            aliases=("HuggingFaceTB/SmolLM2-135M-Instruct",),
            **options,
        )
        await engine.start()
        started.append(engine)
        return engine

    yield make
    for engine in started:
        await engine.aclose()
