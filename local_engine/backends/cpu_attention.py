"""Attention for continuous batching on the CPU: each request attends to its own keys only.

Why: on the CPU, transformers' continuous batching runs SDPA (or eager) attention over the
whole ragged batch at once, every request's queries against every request's cached keys, with
a block-diagonal mask. With 32 running requests a decode step computes 32 times the attention
it needs, which made attention 55% of a step (py-spy, bench/engine/RESULTS.md). Here the
decoding requests (one query each) are gathered into a padded batch, ``[requests, heads, 1,
head_dim]`` against ``[requests, kv_heads, longest, head_dim]`` with a padding mask, and run
as one SDPA call; requests in prefill (several queries) get one causal SDPA each. The outputs
are the same (greedy answers are identical token for token; tests/engine checks them against
``generate()``).

The function is registered with transformers' ``AttentionInterface`` under :data:`NAME`, a name
without "flash" in it, so the batch processor builds no mask for it and passes the cumulative
sequence lengths (``cu_seq_lens_q``, ``cu_seq_lens_k``) that locate each request's queries and
keys in the packed tensors. A plain ``generate()`` on the same model gets ordinary SDPA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "local_engine_cpu_varlen"


def per_request_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``query`` ``[1, heads, queries, d]``; ``key``/``value`` ``[1, kv_heads, keys, d]``, packed
    request after request; returns ``[1, queries, heads, d]`` as transformers expects. Outside
    continuous batching (a plain ``generate()`` on the same model, the solo lane) it is ordinary
    SDPA; transformers builds no mask for this name, so several new queries against a longer
    cache (a speculative draft being verified) get their bottom-right causal mask here."""
    if "cu_seq_lens_q" not in kwargs:
        queries, keys_len = query.shape[2], key.shape[2]
        if attention_mask is None and 1 < queries < keys_len:
            attention_mask = _causal(queries, keys_len).to(query.device)[None, None]
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    cu_k = kwargs["cu_seq_lens_k"]
    if isinstance(cu_k, dict):  # one entry per layer type; this model has only full attention
        (cu_k,) = cu_k.values()
    plan = _plan(tuple(kwargs["cu_seq_lens_q"].tolist()), tuple(cu_k.tolist()), key.shape[2])
    # Gather and write in the token-major layouts the tensors already have underneath
    # (``[keys, kv_heads, d]`` from the paged cache's read, ``[queries, heads, d]`` out): each
    # gathered row is then one contiguous run, and the result needs no transposing copy.
    keys, values = key[0].transpose(0, 1), value[0].transpose(0, 1)
    out = query.new_empty(query.shape[2], query.shape[1], query.shape[3])
    if plan.rows is not None:
        result = F.scaled_dot_product_attention(
            query[0].transpose(0, 1)[plan.rows].unsqueeze(2),  # [requests, heads, 1, d]
            keys[plan.at].transpose(1, 2),  # [requests, kv_heads, longest, d]
            values[plan.at].transpose(1, 2),
            attn_mask=plan.valid,
            scale=scaling,
            enable_gqa=True,
        )
        out[plan.rows] = result.squeeze(2)
    for q0, q1, k0, k1, causal in plan.prefill:
        out[q0:q1] = F.scaled_dot_product_attention(
            query[:, :, q0:q1],
            key[:, :, k0:k1],
            value[:, :, k0:k1],
            attn_mask=causal,
            scale=scaling,
            enable_gqa=True,
        )[0].transpose(0, 1)
    return out.unsqueeze(0), None


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where each request's queries and keys are in one step's packed tensors."""

    rows: torch.Tensor | None
    """The decoding requests' query rows."""
    at: torch.Tensor | None
    """``[requests, longest]``: their key positions (padded)."""
    valid: torch.Tensor | None
    """``[requests, 1, 1, longest]``: which of those are real keys."""
    prefill: list[tuple[int, int, int, int, torch.Tensor]]
    """Requests with several queries: query and key ranges, and their causal mask."""


@functools.lru_cache(maxsize=4)
def _plan(qs: tuple[int, ...], ks: tuple[int, ...], total_keys: int) -> _Plan:
    """Built once per step (every layer of the step asks with the same lengths)."""
    decoding = [i for i in range(len(qs) - 1) if qs[i + 1] - qs[i] == 1]
    prefill = [
        (qs[i], qs[i + 1], ks[i], ks[i + 1], _causal(qs[i + 1] - qs[i], ks[i + 1] - ks[i]))
        for i in range(len(qs) - 1)
        if qs[i + 1] - qs[i] > 1
    ]
    if not decoding:
        return _Plan(None, None, None, prefill)
    counts = torch.tensor([ks[i + 1] - ks[i] for i in decoding])
    span = torch.arange(int(counts.max()))
    starts = torch.tensor([ks[i] for i in decoding])
    at = (starts[:, None] + span[None, :]).clamp(max=total_keys - 1)
    valid = (span[None, :] < counts[:, None])[:, None, None, :]
    return _Plan(torch.tensor([qs[i] for i in decoding]), at, valid, prefill)


def _causal(queries: int, keys: int) -> torch.Tensor:
    """The queries are the last ``queries`` of the ``keys`` positions."""
    return torch.ones(queries, keys, dtype=torch.bool).tril(keys - queries)


AttentionInterface.register(NAME, per_request_attention)
