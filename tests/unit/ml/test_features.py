"""Cheap request features and the category rules."""

from __future__ import annotations

import pytest

from gateway.ml.classifier import CATEGORIES, features_of, features_of_text


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("How do I reverse a list in Python?", "code"),
        ("```js\nconst x = [1, 2].map(v => v * 2)\n```\nwhy is this slow?", "code"),
        ("Fix this SQL: select name from users where id = 3", "code"),
        ("Solve for x: 3x + 5 = 20", "math"),
        (
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether?",
            "math",
        ),
        ("Write a poem about the sea at night", "creative"),
        ("Compose a short story where a cat becomes mayor.", "creative"),
        ("Explain why the sky is blue.", "reasoning"),
        ("Compare the pros and cons of nuclear and solar power.", "reasoning"),
        ("hello there!", "chat"),
        ("thanks, that helped", "chat"),
        ("The capital of Australia", "chat"),
        ("x " * 150, "other"),
    ],
)
def test_category_rules(text: str, category: str) -> None:
    assert features_of_text(text).category == category


def test_categories_are_from_the_set() -> None:
    assert features_of_text("anything at all").category in CATEGORIES


def test_features_of_a_conversation() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "What is 12 * 7?"}]},
    ]
    f = features_of(messages, has_tools=True)
    assert (f.turns, f.has_system, f.has_tools, f.has_math) == (2, True, True, True)
    assert f.chars == len("What is 12 * 7?")
    assert f.context_chars == len("You are terse.hiHello.What is 12 * 7?")
    assert f.numbers == 2
    assert f.vector().shape == (5,)


def test_multiple_choice_is_noticed() -> None:
    f = features_of_text("Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:")
    assert f.choices == 4
    assert f.vector()[4] == 1.0
