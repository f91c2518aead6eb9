"""Per-request sampling for transformers' continuous batching: temperature, top_p, seed, greedy.

transformers' batch loop samples every row of a batch the same way (``do_sample`` is one flag
of the manager) and draws from the global torch RNG, so a request's sample would depend on who
else is in the batch. Instead the manager runs with ``do_sample=False`` (a plain argmax) and
three per-request processors shape each row's scores so that the argmax *is* the sample:

1. `Temperature` divides a sampled row by its temperature; greedy rows (temperature 0) are left
   alone, so greedy decoding is exactly `generate()`'s argmax.
2. `TopP` masks everything outside the nucleus.
3. `GumbelSampler` adds Gumbel noise and keeps only the winner (the Gumbel-max trick draws from
   softmax(scores)). The noise is a counter-based hash of (request key, position, vocab index),
   so a request with a ``seed`` gets the same tokens whatever else runs beside it; requests
   without one get a random key.

Each processor receives one int32 per row, prepared on the host from the request's kwargs; the
device code has no data-dependent Python branching except on CPU, where skipping work for an
all-greedy batch is free (CUDA graphs are never used on CPU).
"""

from __future__ import annotations

import secrets

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.continuous_batching.requests import FutureRequestState
from transformers.generation.logits_process import LogitsProcessorList

_MASK32 = 0xFFFFFFFF


def _mix32(x: int) -> int:
    """murmur3's 32-bit finaliser, on host integers."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    x ^= x >> 16
    return x


def _mix32_tensor(x: torch.Tensor) -> torch.Tensor:
    """The same finaliser on an int64 tensor holding 32-bit values."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def _as_int32(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(dtype=torch.int32)


class Temperature(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {"temperature": float}  # noqa: RUF012 - base class API
    ignored_kwargs: tuple[str, ...] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.copy_(torch.ones_like(int32_tensor, dtype=torch.float32).view(torch.int32))

    def prepare_tensor_args(
        self, requests_with_new_token: list[FutureRequestState]
    ) -> torch.Tensor:
        temps = []
        for request in requests_with_new_token:
            t = request.state.logit_processor_kwargs.get("temperature", 1.0)
            temps.append(t if t > 0 else 1.0)  # greedy rows: divide by 1
        return _as_int32(temps)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        temps = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
        if not scores.is_cuda and bool((temps == 1.0).all()):
            return scores
        return scores / temps.unsqueeze(-1)


class TopP(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {"top_p": float}  # noqa: RUF012 - base class API
    ignored_kwargs: tuple[str, ...] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.copy_(torch.ones_like(int32_tensor, dtype=torch.float32).view(torch.int32))

    def prepare_tensor_args(
        self, requests_with_new_token: list[FutureRequestState]
    ) -> torch.Tensor:
        return _as_int32(
            [r.state.logit_processor_kwargs.get("top_p", 1.0) for r in requests_with_new_token]
        )

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
        if not scores.is_cuda and bool((top_p >= 1.0).all()):
            return scores
        sorted_scores, sorted_idx = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p).unsqueeze(-1)
        remove[..., -1:] = False  # always keep the most likely token
        mask = remove.scatter(-1, sorted_idx, remove)
        return scores.masked_fill(mask, float("-inf"))


class GumbelSampler(ContinuousBatchingLogitsProcessor):
    """Row key 0: greedy, untouched. Otherwise: one-hot of argmax(scores + Gumbel(key))."""

    supported_kwargs: dict[str, type] = {"temperature": float, "seed": int}  # noqa: RUF012
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._salt = secrets.randbits(31)  # makes unseeded requests differ between processes

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.zero_()

    def prepare_tensor_args(
        self, requests_with_new_token: list[FutureRequestState]
    ) -> torch.Tensor:
        keys = []
        for request in requests_with_new_token:
            state = request.state
            kwargs = state.logit_processor_kwargs
            if kwargs.get("temperature", 1.0) <= 0:
                keys.append(0)
                continue
            seed = kwargs.get("seed")
            base = secrets.randbits(32) if seed is None else _mix32(seed ^ 0x5BD1E995)
            # The position (prompt + generated) survives a soft reset of the request, so a
            # seeded request draws the same noise even if the cache had to evict it.
            position = len(state.initial_tokens) + len(state.generated_tokens)
            key = _mix32(base + _mix32(position + self._salt * (seed is None))) | 1
            keys.append(key - (1 << 32) if key >= 1 << 31 else key)  # as a signed int32
        return torch.tensor(keys, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        keys = tensor_arg[: scores.size(0)].to(torch.int64) & _MASK32  # [B]
        sampled = keys != 0
        if not scores.is_cuda and not bool(sampled.any()):
            return scores
        vocab = torch.arange(scores.size(-1), device=scores.device, dtype=torch.int64)
        bits = _mix32_tensor((vocab.unsqueeze(0) * 0x9E3779B1 + keys.unsqueeze(-1)) & _MASK32)
        uniform = (bits.to(torch.float64) + 0.5) / 4294967296.0
        gumbel = -torch.log(-torch.log(uniform)).to(scores.dtype)
        winner = torch.argmax(scores + gumbel, dim=-1, keepdim=True)  # [B, 1]
        one_hot = torch.full_like(scores, float("-inf")).scatter_(-1, winner, 0.0)
        return torch.where(sampled.unsqueeze(-1), one_hot, scores)


def sampling_processors() -> ContinuousBatchingLogitsProcessorList:
    """The processor list to install on a manager created with ``do_sample=False``."""
    processors = ContinuousBatchingLogitsProcessorList(
        LogitsProcessorList([Temperature(), TopP(), GumbelSampler()]),
        per_request_processors=False,
    )
    # Only per-request conversions count their argument rows; ours are per-request already.
    processors.tensors_required = 3
    return processors
