"""What the meaning guard and the embedder read of a long text, and what their memos hold: a
bounded prefix, whatever the prompt's size."""

from __future__ import annotations

from gateway.ml import rules
from gateway.ml.embedder import CHARS_PER_TOKEN, clip
from gateway.ml.memo import TextMemo

DOCUMENT = "In 1969 Apollo 11 flew from Florida to the Moon; it did not carry 12 people. " * 60_000


def test_the_memo_is_bounded_in_entries_and_bytes() -> None:
    calls: list[str] = []

    def compute(text: str) -> str:
        calls.append(text)
        return text.upper()

    memo = TextMemo(compute, len, max_entries=4, max_bytes=10_000)
    for i in range(10):
        assert memo(f"text {i}") == f"TEXT {i}"
    assert len(memo) == 4
    memo("text 9")  # remembered: not computed again
    assert calls.count("text 9") == 1
    memo("text 0")  # evicted long ago: computed again
    assert calls.count("text 0") == 2

    for i in range(10):
        memo(str(i) * 3000)  # 3000 bytes each plus the key: three fit in 10 kB
        assert memo.size_bytes <= 10_000
    assert len(memo) == 3
    memo("x" * 20_000)  # over the whole budget on its own: computed, never held
    assert len(memo) == 3 and memo.size_bytes <= 10_000
    memo.clear()
    assert len(memo) == 0 and memo.size_bytes == 0


def test_a_long_text_is_analysed_by_its_opening_only() -> None:
    assert len(DOCUMENT) > 4_000_000
    analysis = rules.analyse(DOCUMENT)
    assert analysis == rules.analyse(DOCUMENT[: rules.MAX_CHARS])
    assert analysis.length <= 400
    assert rules.check_rules(DOCUMENT, DOCUMENT[: rules.MAX_CHARS]).ok
    # A difference past the opening is not seen; one inside it is.
    assert rules.check_rules(DOCUMENT, DOCUMENT + " Not in 1970.").ok
    assert not rules.check_rules(DOCUMENT, "In 1970" + DOCUMENT[7:]).ok


def test_the_analysis_memo_holds_no_whole_document() -> None:
    memo = rules._memo
    for i in range(50):
        rules.analyse(f"{i} " + DOCUMENT)
    assert memo.size_bytes <= memo.max_bytes
    # Each of the 50 is a 4000-character opening's analysis, far below one document's size.
    assert memo.size_bytes < 50 * 100_000


def test_clip_is_strip_within_the_bound_and_a_prefix_past_it() -> None:
    limit = 128 * CHARS_PER_TOKEN
    for text in [
        "",
        "   ",
        " hi ",
        "\n\tHow do I cook risotto?  ",
        "x" * limit,
        " y" * (limit // 2),
    ]:
        assert clip(text, 128) == text.strip()
    assert clip(DOCUMENT, 128) == DOCUMENT[:limit].rstrip()
    assert clip(" " * 10 + DOCUMENT, 128) == DOCUMENT[:limit].rstrip()
    assert clip(" " * (limit + 5), 128) == ""
