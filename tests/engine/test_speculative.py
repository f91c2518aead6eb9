"""Units of speculative decoding and of the throughput meter (no model)."""

from __future__ import annotations

from array import array

import pytest
import torch

from local_engine.speculative import PromptLookup, accept_greedy, accept_sampled, target_probs
from local_engine.throughput import ThroughputMeter


def ids(*tokens: int) -> array[int]:
    return array("i", tokens)


def test_prompt_lookup_drafts_what_followed_the_latest_earlier_match() -> None:
    lookup = PromptLookup(max_ngram=3, min_ngram=2, max_draft=4)
    #            0  1  2  3  4  5  6  7  8  9 10
    sequence = ids(5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7)
    # "6 7" last occurred at 6..7 (before that at 1..2): what followed it there is drafted.
    assert lookup.propose(sequence, limit=10) == [2, 3, 6, 7]
    assert lookup.propose(sequence, limit=2) == [2, 3]
    assert lookup.propose(sequence, limit=0) == []


def test_prompt_lookup_prefers_the_longest_ngram_and_ignores_unaligned_bytes() -> None:
    lookup = PromptLookup(max_ngram=3, min_ngram=2, max_draft=3)
    sequence = ids(1, 2, 3, 40, 9, 2, 3, 41, 1, 2, 3)
    assert lookup.propose(sequence, limit=5) == [40, 9, 2]  # "1 2 3" beats the later "2 3"
    # 256, 256, 0 is 00 01 00 00 00 01 00 00 00 00 00 00 in bytes: from byte 1 on, it reads as
    # the tokens 1, 1, the last bigram. A match that does not start on a token must not count.
    unaligned = ids(256, 256, 0, 9, 1, 1)
    assert unaligned.tobytes().find(ids(1, 1).tobytes()) == 1
    assert lookup.propose(unaligned, limit=3) == []
    assert lookup.propose(ids(7, 8), limit=3) == []


def test_greedy_acceptance_keeps_the_draft_up_to_the_first_disagreement() -> None:
    scores = torch.full((4, 10), -1.0)
    for row, best in enumerate([3, 4, 9, 1]):
        scores[row, best] = 1.0
    assert accept_greedy(scores, [3, 4, 5]) == [3, 4, 9]  # the model's own token at row 2
    assert accept_greedy(scores, [3, 4, 9]) == [3, 4, 9, 1]  # all kept, plus the bonus token
    assert accept_greedy(scores, [0, 4, 9]) == [3]
    assert accept_greedy(scores[:1], []) == [3]


def test_target_probs_apply_temperature_and_the_nucleus() -> None:
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert target_probs(scores, 1.0, 1.0)[0].tolist() == pytest.approx([0.5, 0.3, 0.15, 0.05])
    nucleus = target_probs(scores, 1.0, 0.8)[0].tolist()
    assert nucleus == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])


def test_rejection_sampling_keeps_the_target_distribution() -> None:
    """Drafting the likely token 0 or the unlikely token 3, the first emitted token is still
    distributed as p: the draft changes how fast we go, never what we say."""
    p = torch.tensor([0.6, 0.25, 0.1, 0.05])
    probs = torch.stack([p, p])
    generator = torch.Generator().manual_seed(7)
    trials = 20_000
    for draft in (0, 3):
        counts = torch.zeros(4)
        for _ in range(trials):
            counts[accept_sampled(probs, [draft], generator)[0]] += 1
        assert (counts / trials).tolist() == pytest.approx(p.tolist(), abs=0.015)


def test_rejection_sampling_accepts_a_draft_at_its_probability() -> None:
    p = torch.tensor([0.7, 0.2, 0.1])
    generator = torch.Generator().manual_seed(11)
    kept = sum(len(accept_sampled(torch.stack([p, p]), [0], generator)) == 2 for _ in range(5000))
    assert kept / 5000 == pytest.approx(0.7, abs=0.03)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throughput_separates_prefill_from_decode_and_forgets_old_passes() -> None:
    clock = Clock()
    meter = ThroughputMeter(window_s=60, clock=clock)
    assert meter.rates().prefill_tokens_per_s is None
    assert meter.rates().decode_tokens_per_s is None
    meter.record(0.5, 0, 10)  # decode only: 20 tokens/s
    meter.record(0.5, 0, 10)
    # A mixed pass: its 4 decode tokens cost 0.2 s at 20/s, so 100 prompt tokens took 0.8 s.
    meter.record(1.0, 100, 4)
    rates = meter.rates()
    assert rates.decode_tokens_per_s == pytest.approx(20.0)
    assert rates.prefill_tokens_per_s == pytest.approx(125.0)
    clock.now += 61
    meter.record(0.1, 50, 0)
    rates = meter.rates()
    assert rates.decode_tokens_per_s is None
    assert rates.prefill_tokens_per_s == pytest.approx(500.0)
