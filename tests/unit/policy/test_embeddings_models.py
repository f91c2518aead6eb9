"""Embeddings models in a policy: their price, dimensions and what the bundled one allows."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.policy.load import PolicyError, load_policy

POLICY = """\
version: 1
models:
  chat:
    provider: openai_compatible
    base_url: http://127.0.0.1:1/v1
    model: m
    price: {input_per_mtok: 1, output_per_mtok: 2}
  embed:
    provider: openai_compatible
    kind: embeddings
    base_url: http://127.0.0.1:1/v1
    model: text-embedding-3-small
    max_dimensions: 1536
    price: {input_per_mtok: 0.02}
  bundled:
    provider: local_engine
    kind: embeddings
    model: all-MiniLM-L6-v2
routes:
  - {name: default, to: chat}
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return load_policy(path, {})


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        _load(tmp_path, text)
    prefix = str(tmp_path / "policy.yaml") + ":"
    return [str(p).removeprefix(prefix) for p in info.value.problems]


def test_an_embeddings_price_may_name_the_input_rate_alone(tmp_path: Path) -> None:
    policy = _load(tmp_path, POLICY).policy  # type: ignore[attr-defined]
    price = policy.models["embed"].price
    assert (price.input_rate, price.output_rate) == (Decimal("0.02"), Decimal(0))


def test_a_chat_price_still_needs_both_rates(tmp_path: Path) -> None:
    text = POLICY.replace("{input_per_mtok: 1, output_per_mtok: 2}", "{input_per_mtok: 1}")
    assert any("output_per_mtok" in p for p in _problems(tmp_path, text))


def test_what_embeddings_models_cannot_have(tmp_path: Path) -> None:
    text = (
        POLICY.replace("    model: m\n", "    model: m\n    max_dimensions: 8\n")
        .replace("model: all-MiniLM-L6-v2", "model: bge-small\n    max_dimensions: 64")
        .replace("max_dimensions: 1536", "max_dimensions: 1536\n    max_tokens: {default: 5}")
        + "baseline_model: embed\n"
    )
    assert [p.split(": ", 1)[1].split(":")[0] for p in _problems(tmp_path, text)] == [
        "$.models.chat.max_dimensions",
        "$.models.embed.max_tokens",
        "$.models.bundled.model",
        "$.models.bundled.max_dimensions",
        "$.baseline_model",
    ]


def test_an_embeddings_fallback_must_serve_the_same_model(tmp_path: Path) -> None:
    same = POLICY.replace(
        "  bundled:",
        "    fallbacks: [other]\n  other:\n    provider: openai_compatible\n    kind: embeddings\n"
        "    base_url: http://127.0.0.1:2/v1\n    model: text-embedding-3-small\n  bundled:",
    )
    _load(tmp_path, same)
    other_model = same.replace("fallbacks: [other]", "fallbacks: [bundled]")
    assert [p.split(": ", 2)[2] for p in _problems(tmp_path, other_model)] == [
        "'bundled' serves another model: its vectors are not comparable"
    ]
    to_chat = same.replace("fallbacks: [other]", "fallbacks: [chat]")
    assert "'chat' is not a" in _problems(tmp_path, to_chat)[0]
