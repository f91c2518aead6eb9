"""The solo lane (speculative decoding), visible prefix caching, measured throughput and int8
weights, with the real SmolLM2 on the CPU."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import torch

from local_engine.errors import ModelLoadError
from local_engine.quantize import quantize
from tests.engine.conftest import PROMPTS, Smol, messages
from tests.engine.test_engine import collect_rest, greedy, text_of

pytestmark = pytest.mark.model

PASSAGE = (
    "The harbour town woke early. Fishing boats left before dawn, their engines loud in the "
    "quiet bay, and the bakery on the corner opened its doors at six."
)
COPYING = f"Repeat this text exactly, word for word: {PASSAGE}"
_LABEL = 'model="smollm2-135m-instruct"'
SYSTEM = "You are a terse assistant for the harbour master's office. Answer in one sentence."


async def test_speculative_greedy_output_equals_generate_token_for_token(
    smol: Smol, make_engine: Any
) -> None:
    """With prompt-lookup drafts on a prompt that is copied, and on plain prompts where drafts
    rarely match, the answer is plain greedy `generate()`'s; the copied one accepts drafts."""
    speculative = await make_engine()
    plain = await make_engine(speculation="off")
    for prompt in (COPYING, PROMPTS[0], PROMPTS[3]):
        reference = smol.reference(prompt, 48)
        for engine in (speculative, plain):
            result = await engine.chat(greedy(prompt, max_tokens=48))
            assert result["choices"][0]["message"]["content"] == smol.tokenizer.decode(
                reference, skip_special_tokens=True
            )
            assert result["usage"]["completion_tokens"] == len(reference)
    drafted, accepted = (
        speculative.metrics.totals["drafted"],
        speculative.metrics.totals["accepted"],
    )
    assert accepted > 10 and drafted >= accepted
    assert plain.metrics.totals["drafted"] == 0
    scraped = speculative.metrics.render().decode()
    ratio = accepted / drafted
    assert f'local_engine_spec_acceptance_ratio{{model="smollm2-135m-instruct"}} {ratio}' in scraped


async def test_a_request_leaves_the_lane_for_the_batch_when_it_grows(
    smol: Smol, make_engine: Any
) -> None:
    """A long answer starts alone in the lane; two more requests make the batch larger than
    ``solo_max_batch`` (1), so it moves into the batch and finishes there, the same tokens."""
    engine = await make_engine()
    backend = engine.backend
    stream = engine.chat_stream(greedy(COPYING, max_tokens=60, stream=True))
    first = [await anext(stream), await anext(stream)]
    assert backend._lane.busy and backend.handoffs == 0
    others = asyncio.gather(*(engine.chat(greedy(p, max_tokens=30)) for p in PROMPTS[1:3]))
    rest = await collect_rest(stream)
    assert backend.handoffs == 1
    assert text_of(first + rest) == smol.reference_text(COPYING, 60)
    for prompt, result in zip(PROMPTS[1:3], await others, strict=True):
        assert result["choices"][0]["message"]["content"] == smol.reference_text(prompt, 30)


async def test_reused_prompt_tokens_are_reported_as_cached(smol: Smol, make_engine: Any) -> None:
    """A shared system prompt is served from the cache, in the lane (its last request's keys
    and values) and in the batch (paged prefix cache), and counted in usage and /metrics."""
    question = [{"role": "system", "content": SYSTEM}]
    first = {"messages": [*question, *messages("When does the bakery open?")], "temperature": 0}
    second = {"messages": [*question, *messages("Where do the boats go?")], "temperature": 0}
    shared = _common_prefix(smol, first["messages"], second["messages"])
    for solo in (1, -1):
        engine = await make_engine(solo_max_batch=solo)
        opened = await engine.chat({**first, "max_tokens": 4})
        assert opened["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
        again = await engine.chat({**second, "max_tokens": 4})
        cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
        # The lane reuses the whole common prefix; the batch, its complete 16-token pages.
        assert cached == (shared if solo == 1 else shared // 16 * 16)
        queried = opened["usage"]["prompt_tokens"] + again["usage"]["prompt_tokens"]
        scraped = engine.metrics.render().decode()
        assert f"local_engine_prefix_cache_reused_tokens_total{{{_LABEL}}} {cached}.0" in scraped
        assert f"local_engine_prefix_cache_queried_tokens_total{{{_LABEL}}} {queried}.0" in scraped
        assert f"local_engine_prefix_cache_hit_ratio{{{_LABEL}}} {cached / queried}" in scraped


def _common_prefix(smol: Smol, a: list[dict[str, str]], b: list[dict[str, str]]) -> int:
    def ids(chat: list[dict[str, str]]) -> list[int]:
        return list(
            smol.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )

    left, right = ids(a), ids(b)
    return next(i for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y)


async def test_measured_throughput_is_exported(make_engine: Any) -> None:
    engine = await make_engine()
    await engine.chat(greedy(PROMPTS[0], max_tokens=8))
    await asyncio.gather(*(engine.chat(greedy(p, max_tokens=8)) for p in PROMPTS[1:4]))
    rates = engine.backend.throughput()
    assert rates.prefill_tokens_per_s is not None and rates.prefill_tokens_per_s > 0
    assert rates.decode_tokens_per_s is not None and rates.decode_tokens_per_s > 0
    scraped = engine.metrics.render().decode()
    for name in ("prefill", "decode"):
        line = next(s for s in scraped.splitlines() if s.startswith(f"local_engine_{name}_tokens"))
        assert float(line.split()[-1]) > 0


async def test_int8_weights_serve_their_own_greedy_answers(smol: Smol, make_engine: Any) -> None:
    """The engine over an int8 weight-only copy of the model answers exactly as that model's
    own `generate()` does, in the lane and in the batch: quantization changes the model, not
    the engine's exactness. The output projection keeps its fp32 weights."""
    model = quantize(copy.deepcopy(smol.model), "int8")
    assert type(model.model.layers[0].mlp.down_proj.weight).__name__ == "Int8Tensor"
    assert model.lm_head.weight.dtype == torch.float32
    ids = smol.prompt_ids(PROMPTS[3])
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=smol.tokenizer.eos_token_id,
        )
    expected = smol.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
    for solo in (1, -1):
        engine = await make_engine(model=model, solo_max_batch=solo)
        result = await engine.chat(greedy(PROMPTS[3], max_tokens=24))
        assert result["choices"][0]["message"]["content"] == expected


@pytest.mark.parametrize(
    ("method", "refusal"),
    [
        ("int4", "'int4' needs a GPU"),
        ("fp8", "use it with --backend vllm"),
        ("int3", "unknown quantization 'int3'"),
    ],
)
def test_quantizations_the_device_cannot_run_are_refused_by_name(
    smol: Smol, method: str, refusal: str
) -> None:
    with pytest.raises(ModelLoadError, match=refusal):
        quantize(smol.model, method)


async def test_sampled_requests_are_speculated_with_rejection_sampling(make_engine: Any) -> None:
    """An unseeded sampled request takes the lane and its drafts are verified by rejection
    sampling (the distribution itself is checked in test_speculative); a seeded one stays in
    the batch, whose sampler keeps a seed's tokens whatever runs beside it."""
    engine = await make_engine()
    body = {"messages": messages(COPYING), "max_tokens": 40, "temperature": 0.3, "top_p": 0.9}
    result = await engine.chat(body)
    assert 0 < result["usage"]["completion_tokens"] <= 40
    totals = engine.metrics.totals
    assert totals["drafted"] > 0 and 0 < totals["accepted"] <= totals["drafted"]
    drafted = totals["drafted"]
    await engine.chat({**body, "seed": 5})
    assert engine.metrics.totals["drafted"] == drafted
