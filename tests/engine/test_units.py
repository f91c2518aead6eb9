"""Model-free tests of the engine: wire format, text streaming, sampling, model resolution."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

from local_engine import loader, models
from local_engine.backends import TokenEvent
from local_engine.engine import LocalEngine
from local_engine.errors import EngineError, ModelLoadError, overloaded
from local_engine.metrics import RateMeter
from local_engine.protocol import ChunkFactory, SamplingDefaults, parse_chat_request
from local_engine.textstream import IncrementalDecoder, StopMatcher
from local_engine.throughput import Throughput

HI = [{"role": "user", "content": "hi"}]


def test_parse_defaults_and_aliases() -> None:
    request = parse_chat_request({"model": "m", "messages": HI})
    assert (request.temperature, request.top_p, request.max_tokens, request.stop) == (
        1.0,
        1.0,
        None,
        (),
    )
    request = parse_chat_request(
        {
            "messages": [
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                *HI,
            ],
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "stop": "x",
            "seed": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
            "unknown_field": 1,
        }
    )
    assert request.messages[0] == {"role": "system", "content": "ab"}
    assert (request.max_tokens, request.stop, request.seed, request.include_usage) == (
        7,
        ("x",),
        3,
        True,
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "max_tokens": True}, "max_tokens"),
        ({"messages": HI, "top_p": 1.5}, "top_p"),
        ({"messages": HI, "stop": [""]}, "stop"),
        ({"messages": HI, "logprobs": True}, "logprobs"),
        ({"messages": HI, "top_k": 40}, "top_k"),
        ({"messages": HI, "model": 3}, "model"),
    ],
)
def test_parse_rejects(body: dict[str, Any], param: str) -> None:
    with pytest.raises(EngineError) as error:
        parse_chat_request(body)
    assert (error.value.status, error.value.param) == (400, param)


def test_error_shape_and_retry_after() -> None:
    error = overloaded(2.2)
    assert error.status == 503 and error.headers() == {"Retry-After": "3"}
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_chunks_share_id_and_carry_usage_last() -> None:
    chunks = ChunkFactory.new("m", include_usage=True)
    role, finish, usage = chunks.role(), chunks.finish("length"), chunks.usage(3, 4, 2)
    assert role["id"] == finish["id"] == usage["id"] and role["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert "usage" not in ChunkFactory.new("m", include_usage=False).content("x")


class FakeTokenizer:
    """Token i decodes to PIECES[i]; pieces 3 and 4 are the two halves of one character."""

    PIECES: ClassVar[list[str]] = ["Hel", "lo", " wor", "\xe2\x82", "\xac", "ld", ""]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        raw = "".join(self.PIECES[i] for i in ids).encode("latin-1")
        return raw.decode("utf-8", errors="replace")


def test_incremental_decoder_holds_back_half_characters() -> None:
    decoder = IncrementalDecoder(FakeTokenizer())
    deltas = [decoder.push(list(range(n + 1))) for n in range(6)]
    assert deltas == ["Hel", "lo", " wor", "", "€", "ld"]


@pytest.mark.parametrize(
    ("pieces", "stops", "sent", "stopped"),
    [
        (["Hello", " wor", "ld"], ["world"], "Hello ", True),
        (["a STO", "P b"], ["STOP"], "a ", True),
        (["ab", "c"], ["abd"], "abc", False),
        (["x", "yz"], ["z", "y"], "x", True),
        (["plain"], [], "plain", False),
    ],
)
def test_stop_matcher(pieces: list[str], stops: list[str], sent: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces) + matcher.flush()
    assert (out, matcher.stopped) == (sent, stopped)


def test_rate_meter_uses_a_sliding_window() -> None:
    now = [100.0]
    meter = RateMeter(window_s=10, clock=lambda: now[0])
    meter.add(50)
    now[0] = 105.5
    meter.add(50)
    assert meter.rate() == 10.0
    now[0] = 112.0
    assert meter.rate() == 5.0


def test_resolve_names_paths_and_hub_ids(tmp_path: Path) -> None:
    bundled = models.resolve("SmolLM2-135M-Instruct")
    assert bundled.served_name == "smollm2-135m-instruct" and bundled.gguf
    assert Path(bundled.location).is_file()
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").served_name == bundled.served_name
    (tmp_path / "config.json").write_text("{}")
    local = models.resolve(str(tmp_path))
    assert (local.served_name, local.gguf) == (tmp_path.name, False)
    assert models.resolve("org/some-model").location == "org/some-model"
    with pytest.raises(ModelLoadError, match="no such model"):
        models.resolve("/definitely/not/here")


def test_load_refuses_an_unknown_backend_and_ends_on_every_eos_token() -> None:
    from transformers import GenerationConfig

    with pytest.raises(ModelLoadError, match="unknown backend 'tpu' \\(transformers, vllm\\)"):
        loader.load("org/some-model", backend="tpu")
    both = GenerationConfig(eos_token_id=[2, 3])
    assert models.eos_token_ids(both, 7) == {2, 3, 7}
    assert models.eos_token_ids(GenerationConfig(eos_token_id=2), None) == {2}
    assert models.eos_token_ids(None, 7) == {7}  # no generation config (GGUF)


def test_sampling_defaults_come_from_the_model_then_its_card_then_openai() -> None:
    """A request without temperature or top_p gets the model's generation config values,
    else the bundled model's recommended ones, else OpenAI's 1 and 1; explicit values win."""
    from transformers import GenerationConfig

    bundled = models.resolve("smollm2-135m-instruct").sampling
    assert bundled == SamplingDefaults(temperature=0.2, top_p=0.9)
    assert models.resolve("org/some-model").sampling == SamplingDefaults(1.0, 1.0)
    assert models.sampling_defaults(GenerationConfig(), bundled) == bundled
    configured = GenerationConfig(do_sample=True, temperature=0.7)
    assert models.sampling_defaults(configured, bundled) == SamplingDefaults(0.7, 0.9)
    request = parse_chat_request({"messages": HI}, bundled)
    assert (request.temperature, request.top_p) == (0.2, 0.9)
    request = parse_chat_request({"messages": HI, "temperature": 1, "top_p": 1}, bundled)
    assert (request.temperature, request.top_p) == (1.0, 1.0)


def test_sampling_processors_shape_scores() -> None:
    torch = pytest.importorskip("torch")
    from local_engine.sampling import GumbelSampler, Temperature, TopP

    scores = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    temps = torch.tensor([0.5, 1.0]).view(torch.int32)
    assert torch.equal(
        Temperature()(scores, temps), torch.tensor([[2.0, 6.0, 4.0], [1.0, 3.0, 2.0]])
    )
    top_p = torch.tensor([0.1, 1.0]).view(torch.int32)
    masked = TopP()(scores, top_p)
    assert masked[0].isinf().tolist() == [True, False, True] and not masked[1].isinf().any()
    keys = torch.tensor([0, 12345], dtype=torch.int32)
    sampled = GumbelSampler()(scores, keys)
    assert torch.equal(sampled[0], scores[0])  # key 0: greedy, untouched
    assert (sampled[1] == 0).sum() == 1 and sampled[1].isinf().sum() == 2
    assert torch.equal(GumbelSampler()(scores, keys), sampled)  # same key, same draw
    draws = {
        int(GumbelSampler()(scores, torch.tensor([0, k], dtype=torch.int32))[1].argmax())
        for k in range(1, 200)
    }
    assert draws == {0, 1, 2}


class FakeBackend:
    """Counts up from 10, one token per step; token 99 ends a sequence (the EOS)."""

    context_length = max_request_tokens = 64
    eos_token_ids = frozenset({99})

    def __init__(self) -> None:
        self.running = False
        self.cancelled: list[str] = []

    async def start(self) -> None:
        self.running = True

    async def aclose(self) -> None:
        self.running = False

    def is_running(self) -> bool:
        return self.running

    def kv_cache_usage(self) -> float:
        return 0.0

    def throughput(self) -> Throughput:
        return Throughput(None, None)

    async def generate(self, request_id: str, prompt_ids: list[int], params: Any) -> Any:
        tokens: list[int] = []
        finished = False
        try:
            while not finished:
                await asyncio.sleep(0)
                tokens.append(10 + len(tokens))
                finished = len(tokens) >= params.max_tokens
                yield TokenEvent(list(tokens), finished)
        finally:
            if not finished:
                self.cancelled.append(request_id)


class SpaceTokenizer:
    """Token t decodes to "w<t> "; the chat template is one token per message."""

    eos_token_id = 99

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f"w{i} " for i in ids if i != 99)

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> list[int]:
        return list(range(len(messages)))


async def test_engine_logic_with_a_fake_backend() -> None:
    backend = FakeBackend()
    engine = LocalEngine(backend, SpaceTokenizer(), "fake", max_running=1, max_queue=0)
    with pytest.raises(EngineError) as not_started:
        await engine.chat({"messages": HI})
    assert (not_started.value.status, not_started.value.code) == (503, "engine_unavailable")
    async with engine:
        result = await engine.chat({"messages": HI, "max_tokens": 3})
        assert result["choices"][0]["message"]["content"] == "w10 w11 w12 "
        assert result["choices"][0]["finish_reason"] == "length"
        assert result["usage"] == {
            "prompt_tokens": 1,
            "completion_tokens": 3,
            "total_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        stopped = await engine.chat({"messages": HI, "max_tokens": 9, "stop": "w12"})
        assert stopped["choices"][0]["message"]["content"] == "w10 w11 "
        assert stopped["choices"][0]["finish_reason"] == "stop"
        assert len(backend.cancelled) == 1  # the stop cancelled the rest of the generation
        with pytest.raises(EngineError) as too_long:
            await engine.chat({"messages": HI, "max_tokens": 64})
        assert too_long.value.param == "max_tokens"
