"""The text the head reads: hashed terms, word-problem facts, and the two groups (fitting on
them: tests/unit/training/router/test_train.py)."""

from __future__ import annotations

import zlib

import numpy as np

from gateway.ml.classifier import features_of, features_of_text
from gateway.ml.head import groups_of
from gateway.ml.terms import PROBLEM_FEATURES, problem_features, term_counts, terms


def test_terms_are_words_and_bigrams_hashed_stably() -> None:
    hashed = terms("The cat, the CAT! a")
    assert len(hashed) == 4 + 3  # "a" is too short, as in scikit-learn
    assert hashed[0] == zlib.crc32(b"the") and hashed[1] == zlib.crc32(b"cat")
    assert hashed[4] == hashed[6]  # "the cat" twice
    distinct, tf = term_counts("the cat the cat")
    # the, cat, "the cat" twice each; "cat the" once
    assert len(distinct) == 4 and np.allclose(
        sorted(tf), [1, 1 + np.log(2), 1 + np.log(2), 1 + np.log(2)]
    )
    assert len(terms("")) == 0


def test_problem_features_count_the_facts_of_a_word_problem() -> None:
    text = (
        "Tom buys 3 apples at $1.50 each. He eats half of them. "
        "If he sells the rest for 20% more, how much does he earn?"
    )
    f = dict(zip(PROBLEM_FEATURES, problem_features(text).tolist(), strict=True))
    assert f["log_sentences"] == np.float32(np.log1p(3))
    assert f["log_distinct_numbers"] == np.float32(np.log1p(3))
    assert (f["decimals"], f["fraction"], f["percent"], f["money"], f["each"], f["if"]) == (
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert f["time"] == 0.0
    assert problem_features("").shape == (len(PROBLEM_FEATURES),)


def test_multiple_choice_prompts_form_their_own_group() -> None:
    choice = features_of_text("Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:").vector()
    open_ = features_of_text("Tom has 3 apples and buys 4 more. How many?").vector()
    assert groups_of(np.stack([choice, open_])).tolist() == [0, 1]


def test_features_carry_the_text_but_compare_without_it() -> None:
    f = features_of([{"role": "user", "content": "x" * 5000}])
    assert len(f.text) == 4000
    assert f == features_of([{"role": "user", "content": "x" * 4999 + "y"}])
