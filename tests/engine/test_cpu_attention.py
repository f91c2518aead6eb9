"""The CPU attention of continuous batching equals attention over the packed batch with the
block-diagonal causal mask that transformers builds (its own SDPA path), for decode and
prefill requests mixed in one step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from local_engine.backends.cpu_attention import per_request_attention


def reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, qs: list[int],
              ks: list[int]) -> torch.Tensor:  # fmt: skip
    """Every query against every packed key, masked to its own request's causal keys."""
    mask = torch.zeros(query.shape[2], key.shape[2], dtype=torch.bool)
    for i in range(len(qs) - 1):
        lq, lk = qs[i + 1] - qs[i], ks[i + 1] - ks[i]
        mask[qs[i] : qs[i + 1], ks[i] : ks[i + 1]] = torch.ones(lq, lk).tril(lk - lq).bool()
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True)
    return out.transpose(1, 2)


def test_matches_the_block_diagonal_attention() -> None:
    torch.manual_seed(0)
    # four requests: decoding with 7 and 30 cached keys, a prefill of 5 new tokens on 12 keys,
    # and a first prefill of 9 tokens
    q_lens, k_lens = [1, 1, 5, 9], [7, 30, 12, 9]
    qs = [0, *torch.tensor(q_lens).cumsum(0).tolist()]
    ks = [0, *torch.tensor(k_lens).cumsum(0).tolist()]
    query = torch.randn(1, 6, qs[-1], 16)
    key, value = torch.randn(1, 2, ks[-1], 16), torch.randn(1, 2, ks[-1], 16)
    got, _ = per_request_attention(
        torch.nn.Module(),
        query,
        key,
        value,
        None,
        cu_seq_lens_q=torch.tensor(qs),
        cu_seq_lens_k={"full_attention": torch.tensor(ks)},
    )
    torch.testing.assert_close(got, reference(query, key, value, qs, ks), atol=1e-5, rtol=1e-5)


def test_outside_continuous_batching_it_is_plain_sdpa() -> None:
    torch.manual_seed(1)
    query, key, value = torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8), torch.randn(1, 4, 6, 8)
    module = torch.nn.Module()
    module.is_causal = True  # type: ignore[assignment]
    module.num_key_value_groups = 1  # type: ignore[assignment]
    got, _ = per_request_attention(module, query, key, value, None)
    want = F.scaled_dot_product_attention(query, key, value, is_causal=True).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
