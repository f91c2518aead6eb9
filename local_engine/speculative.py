"""Lossless speculative decoding: prompt-lookup drafts and their verification.

A draft is a guess at the next few tokens, checked by one forward pass of the model over the
last token and the draft together (``k + 1`` positions instead of one). Row ``i`` of that pass's
scores is what the model says after draft token ``i``; the draft is kept up to its first token
the model would not have produced, and the model's own token at that row is appended, so every
verification yields at least one token and at most ``k + 1``.

Drafts come from the request's own text (prompt-lookup, or n-gram, drafting as in Saxena's
"Prompt Lookup Decoding" and transformers' ``prompt_lookup_num_tokens``): the last ``n``
tokens are looked up earlier in the prompt and completion, and whatever followed them there is
the draft. Requests that copy from their prompt (summaries, edits, extraction, code changes)
accept long drafts; others find no match and decode one token at a time at no extra cost.

Lossless, by construction:

* greedy rows keep a draft token only if it is the argmax, so the output is the plain greedy
  output token for token;
* sampled rows use the rejection sampling of Leviathan et al. and Chen et al. (2023) with a
  draft distribution that is a point mass on the drafted token ``d``: ``d`` is kept with
  probability ``p(d)``; when it is not, the token is drawn from ``p`` with ``d`` removed and
  renormalised (``max(0, p - q)``). Each emitted token is then distributed exactly as ``p``, the
  target distribution after temperature and top_p.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import torch

MAX_NGRAM = 3
MIN_NGRAM = 2
"""Single-token matches are mostly coincidences: their drafts cost a wider forward pass and are
rarely accepted (bench/engine/RESULTS.md)."""
MAX_DRAFT = 8
"""The most tokens one draft holds (the solo lane shortens it for a request whose drafts fail)."""


@dataclass(frozen=True, slots=True)
class PromptLookup:
    """Draft the tokens that followed the latest earlier occurrence of the last n-gram."""

    max_ngram: int = MAX_NGRAM
    min_ngram: int = MIN_NGRAM
    max_draft: int = MAX_DRAFT

    def propose(self, ids: array[int], limit: int) -> list[int]:
        """At most ``min(limit, max_draft)`` tokens; none when no n-gram recurs.

        The search runs over the bytes of an ``array('i')`` (``bytes.rfind`` in C), keeping only
        matches aligned to a whole token: a search per step costs microseconds, not the
        milliseconds a Python loop over a long prompt would.
        """
        limit = min(limit, self.max_draft)
        if limit <= 0:
            return []
        raw, width = ids.tobytes(), ids.itemsize
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(ids) <= n:
                continue
            pattern = raw[-n * width :]
            end = len(raw) - width  # the match must end before the last token
            at = raw.rfind(pattern, 0, end)
            while at >= 0 and at % width:
                at = raw.rfind(pattern, 0, at + n * width - 1)
            if at >= 0:
                start = at // width + n
                return list(ids[start : start + limit])
        return []


def target_probs(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """``softmax(scores / temperature)`` restricted to the top_p nucleus, row by row: the
    distribution a sampled request draws from (the same nucleus rule as `sampling.TopP`)."""
    probs = torch.softmax(scores.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1)
    outside = sorted_probs.cumsum(dim=-1) <= (1 - top_p)
    outside[..., -1] = False  # the most likely token always stays
    probs = probs.masked_fill(outside.scatter(-1, order, outside), 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)


def accept_greedy(scores: torch.Tensor, draft: list[int]) -> list[int]:
    """``scores`` ``[len(draft) + 1, vocab]``: the kept draft and the model's next token."""
    best = scores.argmax(dim=-1).tolist()
    kept = 0
    while kept < len(draft) and draft[kept] == best[kept]:
        kept += 1
    return [*draft[:kept], best[kept]]


def accept_sampled(
    probs: torch.Tensor, draft: list[int], generator: torch.Generator | None
) -> list[int]:
    """``probs`` ``[len(draft) + 1, vocab]`` (`target_probs`): rejection sampling against a
    point-mass draft (see the module docstring)."""
    out: list[int] = []
    uniforms = torch.rand(len(draft), generator=generator, device=probs.device).tolist()
    for i, token in enumerate(draft):
        if uniforms[i] < float(probs[i, token]):
            out.append(token)
            continue
        residual = probs[i].clone()
        residual[token] = 0.0
        out.append(_draw(residual, generator))
        return out
    out.append(_draw(probs[len(draft)], generator))
    return out


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(weights, 1, generator=generator))
