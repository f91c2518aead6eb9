"""The opposite-meaning check of the meaning guard, and the table it reads.

The pairs here are not those of bench/cache/data/opposites_heldout.jsonl, which is kept for
measuring (bench/cache/strictness.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ml import guard, opposites
from gateway.ml.opposites import AntonymTable, opposed, prefixed
from gateway.training.cache import antonyms

OPPOSED = [
    # verbs that undo each other (WordNet direct antonyms; inflected forms)
    ("How do I open a port in ufw?", "How do I close a port in ufw?", ("close", "open")),
    ("Why did my stocks rise today?", "Why did my stocks fall today?", ("fall", "rise")),
    ("When should I buy bitcoin?", "When should I sell bitcoin?", ("sell", "buy")),
    ("Who won the match?", "Who lost the match?", ("lost", "won")),  # irregular forms
    # adjectives and nouns (indirect adjective antonyms, derived nouns, comparatives)
    ("Is the 7 train cheap?", "Is the 7 train expensive?", ("expensive", "cheap")),
    ("Why is my tea so weak?", "Why is my tea so strong?", ("strong", "weak")),
    ("What are its strengths?", "What are its weaknesses?", ("weaknesses", "strengths")),
    ("Which is the hardest exam?", "Which is the easiest exam?", ("easiest", "hardest")),
    ("Is the shelf above the sink?", "Is the shelf below the sink?", ("below", "above")),
    ("What are the pros of Rust?", "What are the cons of Rust?", ("cons", "pros")),
    # prefixes, one negating and two opposing
    ("How do I attach a disk?", "How do I detach a disk?", ("detach", "attach")),
    ("Is this move legal?", "Is this move illegal?", ("illegal", "legal")),
    ("How do I enable SSH?", "How do I disable SSH?", ("disable", "enable")),
    ("How do I upload a photo?", "How do I download a photo?", ("download", "upload")),
    # particles, counted: "in" occurs on both sides but once more on one
    ("How do I zoom in on a map in Maps?", "How do I zoom out on a map in Maps?", ("out", "in")),
    ("How do I turn on Bluetooth?", "How do I turn off Bluetooth?", ("off", "on")),
]

SAME = [
    ("How do I open a port in ufw?", "How can I open a port with ufw?"),
    ("What is the capital city of France?", "Which city is the capital of France?"),
    ("Why don't vegans eat meat?", "Why do vegans not eat meat?"),  # negation: the rules' job
    ("What is the difference between TCP and UDP?", "How is TCP different from UDP?"),
    ("What are the pros and cons of Rust?", "What are the advantages and disadvantages of Rust?"),
    ("How do I debug this?", "How can I find the bug here?"),  # a stem too short to negate
]


@pytest.mark.parametrize(("a", "b", "pair"), OPPOSED)
def test_a_word_and_its_opposite_are_found(a: str, b: str, pair: tuple[str, str]) -> None:
    assert opposed(b, a) == pair
    assert opposed(a, b) == pair[::-1]
    verdict = guard.check(b, a)
    assert not verdict.ok and verdict.reason == guard.Veto.OPPOSITE


@pytest.mark.parametrize(("a", "b"), SAME)
def test_questions_that_mean_the_same_are_not_opposed(a: str, b: str) -> None:
    assert opposed(a, b) is None
    assert opposed(b, a) is None


def test_prefixes_need_a_stem_and_a_real_opposition() -> None:
    assert prefixed("install", "uninstall") and prefixed("uninstall", "install")
    assert prefixed("increase", "decrease") and prefixed("input", "output")
    assert not prefixed("bug", "debug")  # the stem is too short to be a negated word
    assert not prefixed("install", "reinstall")  # re- is no opposite
    assert not prefixed("inform", "reform")


def test_the_table_is_symmetric_and_lemmatises() -> None:
    table = opposites.default_table()
    assert "sell" in table.opposites["buy"] and "buy" in table.opposites["sell"]
    assert table.lemmas("bought") == {"buy"}  # irregular form
    assert "stop" in table.lemmas("stopped")  # doubled consonant
    assert table.antonyms("worst", "best") and table.antonyms("best", "worst")
    assert not table.antonyms("be", "differ")  # function words are left out
    assert not table.antonyms("can", "employ")


def test_the_builder_reads_a_wordnet_directory(tmp_path: Path) -> None:
    """A two-synset WordNet (verbs buy/sell, their derived nouns, an adjective head with a
    satellite) in the database's own format; the table it writes reads back the same."""
    wordnet = tmp_path / "dict"
    wordnet.mkdir()
    (wordnet / "data.verb").write_text(
        "  1 This is the license header\n"
        "00000010 40 v 01 buy 0 002 ! 00000020 v 0101 + 00000030 n 0101 00 | obtain\n"
        "00000020 40 v 01 sell 0 001 ! 00000010 v 0101 00 | exchange\n"
    )
    (wordnet / "data.noun").write_text(
        "00000030 04 n 01 buyer 0 001 + 00000010 v 0101 | a purchaser\n"
    )
    (wordnet / "data.adj").write_text(
        "00000040 00 a 01 expensive 0 002 ! 00000050 a 0101 & 00000060 a 0000 | costly\n"
        "00000050 00 a 01 inexpensive 0 001 ! 00000040 a 0101 | cheap\n"
        "00000060 00 s 01 pricey 0 001 & 00000040 a 0000 | high-priced\n"
        "00000070 00 s 01 cheap 0 001 & 00000050 a 0000 | low-priced\n"
    )
    (wordnet / "data.adv").write_text("")
    (wordnet / "index.verb").write_text("buy v 1 2 ! + 1 1 00000010\nsell v 1 1 ! 1 1 00000020\n")
    (wordnet / "index.noun").write_text("buyer n 1 1 + 1 0 00000030\n")
    (wordnet / "index.adj").write_text(
        "expensive a 1 2 ! & 1 0 00000040\ninexpensive a 1 1 ! 1 0 00000050\n"
        "pricey a 1 1 & 1 0 00000060\ncheap a 1 1 & 1 0 00000070\n"
    )
    (wordnet / "index.adv").write_text("")
    (wordnet / "verb.exc").write_text("bought buy\nsold sell\n")
    for name in ("noun", "adj", "adv"):
        (wordnet / f"{name}.exc").write_text("")
    built, exceptions = antonyms.build(wordnet)
    assert built["buy"] == {"sell"} and built["buyer"] == {"sell"}
    assert built["cheap"] == {"expensive"}  # a satellite against its head's antonym
    assert built["pricey"] == {"inexpensive"}
    assert exceptions == {"bought": {"buy"}, "sold": {"sell"}}
    out = tmp_path / "antonyms.tsv"
    antonyms.write(built, exceptions, out)
    assert out.read_text().startswith(f"# {antonyms.NOTICE}\n")
    table = AntonymTable.load(out)
    assert table.antonyms("sold", "buyer") and table.antonyms("cheap", "expensive")
    assert not table.antonyms("cheap", "pricey")
