"""The meaning guard: hard negatives of each kind are vetoed, paraphrases pass."""

from __future__ import annotations

import pytest

from gateway.ml.guard import Reason, check, same_question

NEGATIVES = [
    # numbers
    (
        "What is the best phone to buy below 10K?",
        "What is the best phone to buy below 15k?",
        Reason.NUMBERS,
    ),
    ("What major events happened in 2002?", "What major events happened in 1992?", Reason.NUMBERS),
    ("How do I lose 5 kg in two weeks?", "How do I lose 5 kg in three weeks?", Reason.NUMBERS),
    ("Summarise this in 3 bullet points", "Summarise this in 5 bullet points", Reason.NUMBERS),
    ("What is 15% of 200?", "What is 20% of 200?", Reason.NUMBERS),
    # negation
    ("Why do vegans not eat meat?", "Why do vegans eat meat?", Reason.NEGATION),
    ("Which foods are safe for dogs?", "Which foods are not safe for dogs?", Reason.NEGATION),
    ("Can I run this without root?", "Can I run this with root?", Reason.NEGATION),
    ("Why don't cats like water?", "Why do cats like water?", Reason.NEGATION),
    ("List fruits that never contain seeds", "List fruits that contain seeds", Reason.NEGATION),
    # named entities
    (
        "What are the most popular online forums in Canada?",
        "What are the most popular online forums in Germany?",
        Reason.ENTITIES,
    ),
    (
        "How are design decisions made at Twitter?",
        "How are design decisions made at Amazon?",
        Reason.ENTITIES,
    ),
    (
        "Which is the best institute for Hadoop in Chennai?",
        "Which is the best institute for Hadoop?",
        Reason.ENTITIES,
    ),
    ("How do I install Node.js on Windows?", "How do I install Node.js on macOS?", Reason.ENTITIES),
    ("What is the capital of Australia?", "What is the capital of Austria?", Reason.ENTITIES),
    ("Write a binary search in Python", "Write a binary search in Rust", Reason.ENTITIES),
    # direction
    (
        "How do I get from Paris to London by train?",
        "How do I get from London to Paris by train?",
        Reason.DIRECTION,
    ),
    ("Convert USD to EUR", "Convert EUR to USD", Reason.DIRECTION),
    ("Is Python faster than Java?", "Is Java faster than Python?", Reason.DIRECTION),
    (
        "Translate this text from english into french",
        "Translate this text from french into english",
        Reason.DIRECTION,
    ),
    (
        "How to migrate from mysql to postgres?",
        "How to migrate from postgres to mysql?",
        Reason.DIRECTION,
    ),
]

POSITIVES = [
    ("How do I cook risotto?", "How do I make risotto?"),
    (
        "What should I do to increase my followers on Instagram?",
        "How can I boost my followers and likes on Instagram?",
    ),
    ("What is the best phone under 10k?", "What's the best phone under 10,000?"),
    ("How Can I Become A Better Person?", "How do I become a better person?"),
    ("How do I get from Paris to London?", "What's the best way to get to London from Paris?"),
    ("Why can't I sleep at night?", "Why am I not able to sleep at night?"),
    (
        "Hugging Face Hub is a platform to host Git-based models, datasets, and Spaces.",
        "Hugging Face Hub serves as a repository for Git-based models, datasets, and Spaces.",
    ),
    (
        "Transformers is a state-of-the-art machine learning library for Pytorch and JAX.",
        "Transformers is a cutting-edge machine learning library for PyTorch and JAX.",
    ),
    (
        "What is Hillary Clinton's stand on relations with India?",
        "What are Hillary Clinton's views on relations with India?",
    ),
    ("Explain quicksort in two sentences", "Explain quicksort in 2 sentences"),
    ("what is the capital of france", "What's the capital of France?"),
]


@pytest.mark.parametrize(("a", "b", "reason"), NEGATIVES)
def test_hard_negatives_are_vetoed_for_the_right_reason(a: str, b: str, reason: Reason) -> None:
    verdict = check(a, b)
    assert not verdict.ok
    assert verdict.reason == reason, verdict
    assert not check(b, a).ok  # symmetric


@pytest.mark.parametrize(("a", "b"), POSITIVES)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert check(a, b).ok, check(a, b)
    assert same_question(b, a)


def test_question_word_changes_the_question() -> None:
    verdict = check("Where was Mozart born?", "When was Mozart born?")
    assert verdict.reason == Reason.QUESTION_WORD
    assert check("Who wrote Dune?", "Who is the author of Dune?").ok


def test_identical_and_empty_texts_pass() -> None:
    assert same_question("", "")
    assert same_question("What is 2+2?", "What is 2+2?")
