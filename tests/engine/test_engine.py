"""LocalEngine in-process, with the real SmolLM2 on the CPU: batching, streaming, stops, limits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from local_engine.engine import LocalEngine
from local_engine.errors import EngineError
from tests.engine.conftest import LONG_PROMPT, MAX_TOKENS, PROMPTS, Smol, messages

pytestmark = pytest.mark.model


def greedy(prompt: str, max_tokens: int = MAX_TOKENS, **extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2-135m-instruct",
        "messages": messages(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


async def collect(engine: LocalEngine, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in engine.chat_stream(body)]


async def test_concurrent_greedy_outputs_equal_generate(smol: Smol, make_engine: Any) -> None:
    references = {p: smol.reference(p) for p in PROMPTS}  # plain generate(), one at a time
    engine = await make_engine()
    early, late = PROMPTS[:3], PROMPTS[3:]
    # The early requests are decoding when the late ones join the batch.
    streams = [engine.chat_stream(greedy(p, stream=True)) for p in early]
    firsts = [[await anext(s), await anext(s)] for s in streams]  # role + first content
    late_results = asyncio.gather(*(engine.chat(greedy(p)) for p in late))
    early_chunks = await asyncio.gather(*(collect_rest(s) for s in streams))
    for prompt, first, rest in zip(early, firsts, early_chunks, strict=True):
        expected = smol.tokenizer.decode(references[prompt], skip_special_tokens=True)
        assert text_of(first + rest) == expected
    for prompt, result in zip(late, await late_results, strict=True):
        reference = references[prompt]
        assert result["choices"][0]["message"]["content"] == smol.tokenizer.decode(
            reference, skip_special_tokens=True
        )
        usage = dict(result["usage"])
        cached = usage.pop("prompt_tokens_details")["cached_tokens"]
        assert usage == {
            "prompt_tokens": len(smol.prompt_ids(prompt)),
            "completion_tokens": len(reference),
            "total_tokens": len(smol.prompt_ids(prompt)) + len(reference),
        }
        assert cached % 16 == 0  # whole pages of the batch's prefix cache
        ended_on_eos = reference[-1] == smol.tokenizer.eos_token_id
        assert result["choices"][0]["finish_reason"] == ("stop" if ended_on_eos else "length")


async def collect_rest(stream: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


async def test_a_shared_prompt_prefix_reuses_cached_pages_and_answers_the_same(
    smol: Smol, make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """On the CPU, cache pages are 16 tokens: the chat template's system prompt fills the
    first one, which a later request takes from the cache instead of recomputing it (the solo
    lane is off: it would take each request, alone, from the batch)."""
    engine = await make_engine(solo_max_batch=-1)
    batching_log = logging.getLogger("ContinuousBatchingLogger")  # transformers' own logger
    batching_log.addHandler(caplog.handler)
    previous = batching_log.level
    batching_log.setLevel(logging.DEBUG)
    try:
        await engine.chat(greedy(PROMPTS[0]))
        result = await engine.chat(greedy(PROMPTS[1]))
    finally:
        batching_log.removeHandler(caplog.handler)
        batching_log.setLevel(previous)
    assert result["choices"][0]["message"]["content"] == smol.reference_text(PROMPTS[1])
    assert any("prefix match of 16 tokens" in r.getMessage() for r in caplog.records)


async def test_a_prompt_longer_than_the_batch_budget_is_prefilled_in_chunks_and_reused(
    smol: Smol, make_engine: Any
) -> None:
    """A 1,400-token prompt under a 256-token batch budget is prefilled in six chunks beside a
    decoding request (each chunk's queries attend causally to the cached earlier chunks); asked
    again, it reuses all its complete cached pages. Both answers are generate()'s."""
    prompt = " ".join(f"Item {i} is a {('red', 'blue', 'green')[i % 3]} box." for i in range(150))
    prompt += " Which colour is item 7?"
    assert len(smol.prompt_ids(prompt)) > 5 * 256
    engine = await make_engine(max_batch_tokens=256, solo_max_batch=-1)
    beside, chunked = await asyncio.gather(
        engine.chat(greedy(PROMPTS[0])), engine.chat(greedy(prompt))
    )
    again = await engine.chat(greedy(prompt))
    expected = smol.reference_text(prompt)
    assert chunked["choices"][0]["message"]["content"] == expected
    assert again["choices"][0]["message"]["content"] == expected
    assert beside["choices"][0]["message"]["content"] == smol.reference_text(PROMPTS[0])


async def test_completion_shape_and_usage(smol: Smol, make_engine: Any) -> None:
    engine = await make_engine()
    result = await engine.chat(greedy(PROMPTS[0], max_tokens=5))
    assert result["id"].startswith("chatcmpl-")
    assert result["object"] == "chat.completion"
    assert isinstance(result["created"], int)
    assert result["model"] == "smollm2-135m-instruct"
    (choice,) = result["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 5
    assert result["usage"]["prompt_tokens"] == len(smol.prompt_ids(PROMPTS[0]))


async def test_stream_concatenates_to_the_non_streamed_text(make_engine: Any) -> None:
    engine = await make_engine()
    body = greedy(PROMPTS[1], max_tokens=24)
    whole = await engine.chat(body)
    chunks = await collect(
        engine, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert text_of(chunks) == whole["choices"][0]["message"]["content"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith(
        "chatcmpl-"
    )
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert finish["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    streamed_usage, whole_usage = dict(usage["usage"]), dict(whole["usage"])
    # Asked again, the solo lane still holds the prompt: all but its last token are reused.
    prompt = whole_usage["prompt_tokens"]
    assert streamed_usage.pop("prompt_tokens_details") == {"cached_tokens": prompt - 1}
    assert whole_usage.pop("prompt_tokens_details") == {"cached_tokens": 0}
    assert streamed_usage == whole_usage
    assert all(c["usage"] is None for c in chunks[:-1])
    without_usage = await collect(engine, {**body, "stream": True})
    assert text_of(without_usage) == text_of(chunks)
    assert without_usage[-1]["choices"][0]["finish_reason"] is not None
    assert all("usage" not in c for c in without_usage)


async def test_stop_sequences_cut_before_the_stop_text(smol: Smol, make_engine: Any) -> None:
    prompt = PROMPTS[3]
    full = smol.reference_text(prompt)
    words = full.split()
    stop = " " + words[len(words) // 2]
    cut = full.index(stop)
    engine = await make_engine()
    result = await engine.chat(greedy(prompt, stop=stop))
    assert result["choices"][0]["message"]["content"] == full[:cut]
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] < len(smol.reference(prompt))
    streamed = await collect(engine, greedy(prompt, stop=[stop], stream=True))
    assert text_of(streamed) == full[:cut]
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"
    # Of several stops, the earliest in the text wins.
    earliest = full[2:6]
    result = await engine.chat(greedy(prompt, stop=[stop, earliest]))
    assert result["choices"][0]["message"]["content"] == full[: full.index(earliest)]


async def test_cancelling_a_stream_frees_its_slot(make_engine: Any) -> None:
    engine = await make_engine(max_running=1, max_queue=4)
    first = engine.chat_stream(greedy(LONG_PROMPT, max_tokens=400, stream=True))
    await anext(first)
    await anext(first)  # decoding now, holding the only slot
    waiting = asyncio.create_task(engine.chat(greedy(PROMPTS[4], max_tokens=3)))
    await wait_for(lambda: engine.stats().waiting == 1)
    assert engine.stats().running == 1
    await first.aclose()  # the client went away
    result = await asyncio.wait_for(waiting, timeout=120)
    assert result["usage"]["completion_tokens"] == 3
    await wait_for(lambda: engine.backend.active_requests() == 0)
    assert engine.stats().running == 0 and engine.stats().waiting == 0
    assert engine.backend.kv_cache_usage() == pytest.approx(0.0, abs=0.01)
    metrics = engine.metrics.render().decode()
    assert (
        'local_engine_requests_total{model="smollm2-135m-instruct",outcome="cancelled"} 1.0'
        in metrics
    )


async def test_a_full_queue_is_refused_with_retry_after(make_engine: Any) -> None:
    engine = await make_engine(max_running=1, max_queue=1)
    holder = engine.chat_stream(greedy(LONG_PROMPT, max_tokens=400, stream=True))
    await anext(holder)
    queued = asyncio.create_task(engine.chat(greedy(PROMPTS[4], max_tokens=2)))
    await wait_for(lambda: engine.stats().waiting == 1)
    with pytest.raises(EngineError) as refused:
        await engine.chat(greedy(PROMPTS[1], max_tokens=2))
    assert refused.value.status == 503
    assert refused.value.code == "engine_overloaded"
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    assert int(refused.value.headers()["Retry-After"]) >= 1
    with pytest.raises(EngineError):  # streams are refused before their first chunk
        await anext(engine.chat_stream(greedy(PROMPTS[1], stream=True)))
    await holder.aclose()
    assert (await asyncio.wait_for(queued, timeout=120))["usage"]["completion_tokens"] == 2


async def test_seeded_sampling_is_reproducible_whatever_the_batch(make_engine: Any) -> None:
    engine = await make_engine()
    body = {"messages": messages(PROMPTS[1]), "max_tokens": 12, "temperature": 0.9, "seed": 1234}
    alone = await engine.chat(body)
    crowd = await asyncio.gather(
        engine.chat(body), *(engine.chat(greedy(p, max_tokens=6)) for p in PROMPTS[2:5])
    )
    assert crowd[0]["choices"][0]["message"]["content"] == alone["choices"][0]["message"]["content"]
    others = {
        (await engine.chat({**body, "seed": seed}))["choices"][0]["message"]["content"]
        for seed in (1, 2, 3)
    }
    assert len(others | {alone["choices"][0]["message"]["content"]}) > 1


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"messages": []}, "messages", "empty_messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "invalid_role"),
        ({"n": 2}, "n", None),
        ({"max_tokens": 100_000}, "max_tokens", "context_length_exceeded"),
        ({"messages": messages("hello " * 9000)}, "messages", "context_length_exceeded"),
        ({"temperature": 3}, "temperature", None),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", None),
    ],
)
async def test_bad_input_is_a_400(
    make_engine: Any, change: dict[str, Any], param: str, code: str | None
) -> None:
    engine = await make_engine()
    with pytest.raises(EngineError) as error:
        await engine.chat({**greedy(PROMPTS[0]), **change})
    assert (error.value.status, error.value.param, error.value.code) == (400, param, code)
    assert error.value.body()["error"]["type"] == "invalid_request_error"


async def test_unknown_model_is_a_404_and_aliases_are_accepted(make_engine: Any) -> None:
    engine = await make_engine()
    with pytest.raises(EngineError) as error:
        await engine.chat({**greedy(PROMPTS[0]), "model": "gpt-4o"})
    assert (error.value.status, error.value.code) == (404, "model_not_found")
    for name in ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", None):
        body = {**greedy(PROMPTS[0], max_tokens=1), "model": name}
        assert (await engine.chat(body))["usage"]["completion_tokens"] == 1


async def test_load_reuses_the_converted_model(smol: Smol, model_cache: Any) -> None:
    engine = await asyncio.to_thread(
        LocalEngine.load,
        "smollm2-135m-instruct",
        device="cpu",
        cache_dir=model_cache,
        kv_cache_tokens=4096,
    )
    async with engine:
        result = await engine.chat(greedy(PROMPTS[2]))
    assert result["choices"][0]["message"]["content"] == smol.reference_text(PROMPTS[2])
    # GGUF carries no generation config: requests without temperature or top_p sample as the
    # model card recommends, not at OpenAI's temperature 1 (local_engine.models.BUNDLED).
    assert (engine.sampling.temperature, engine.sampling.top_p) == (0.2, 0.9)


async def wait_for(predicate: Any, limit_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
