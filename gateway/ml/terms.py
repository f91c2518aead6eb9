"""What the difficulty head reads from a prompt's text besides its embedding: hashed terms for
the bag-of-words part, and a few word-problem facts. numpy and the standard library only.

Why these (measured by cross-validation inside the training split, bench/router/RESULTS.md):

- **terms** (lower-cased words of two or more characters and their bigrams, as
  scikit-learn's default tokenizer reads them): MiniLM embeddings blur the words that make an
  MMLU question hard for the small model (negations such as NOT and EXCEPT, "Statement 1 |",
  named laws and cases); a TF-IDF logistic pair over terms carries them. Terms are hashed with
  CRC-32 (stable across processes, unlike ``hash()``); a bigram's hash combines its words'
  hashes. With a vocabulary of ~50k terms, a false hit of an unseen term has a chance of about
  1e-5.
- **problem facts**: how long a word problem is, how many sentences and quantities it has,
  fractions, percentages, money, rates and time: the little that predicts where the small model
  fails on GSM8K (each alone reaches a cross-validated APGR of 0.50-0.57).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import numpy.typing as npt

SCAN = 4000  # characters of a long prompt that are read, as in gateway/classify.py
PROBLEM_SCAN = 1000  # word problems are short (GSM8K: at most 848 characters); 0.4 ms at most

_TOKEN = re.compile(r"\b\w\w+\b")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:/\d+)?")
_SENTENCE = re.compile(r"[.?!](?:\s+|$)")
_WORD = re.compile(r"\w+")
_FRACTION = re.compile(r"\d/\d")
_KM_H = re.compile(r"\bkm/h\b")
_KEYWORDS = {
    "fraction": {"half", "halves", "third", "thirds", "quarter", "quarters", "fifth", "fifths"},
    "time": {"hour", "minute", "second", "day", "week", "month", "year"},
    "times": {"twice", "double", "triple", "times"},
    "each": {"each", "per", "every"},
    "rate": {"rate", "speed", "mph"},
    "left": {"left", "remaining", "rest"},
    "if": {"if"},
}
_KEYWORDS["time"] |= {f"{w}s" for w in _KEYWORDS["time"]}
# fmt: off
_NUMBER_WORDS = frozenset({
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "twenty", "thirty", "forty", "fifty", "hundred", "thousand", "dozen",
})
# fmt: on
"""The keyword facts read from the text's words, looked up in sets: one pass over the words
instead of nine case-insensitive scans of the text (0.9 ms of a 1,000-character prompt)."""

PROBLEM_FEATURES = (
    "log_words",
    "log_sentences",
    "log_distinct_numbers",
    "log_max_number",
    "log_question_chars",
    "log_number_words",
    "decimals",
    "fraction",
    "percent",
    "money",
    "time",
    "times",
    "each",
    "rate",
    "left",
    "if",
)


def problem_features(text: str) -> npt.NDArray[np.float32]:
    """The word-problem facts of ``PROBLEM_FEATURES``, in that order."""
    head = text[:PROBLEM_SCAN]
    numbers = _NUMBER.findall(head)
    largest = 0.0
    for n in numbers:
        try:
            largest = max(largest, float(n.replace(",", "").split("/")[0]))
        except ValueError:  # "1.2.3"
            continue
    ends = [m.end() for m in _SENTENCE.finditer(head.rstrip())]
    question = head.rstrip()[ends[-2] if len(ends) > 1 else 0 :]
    lower = head.lower()
    words = _WORD.findall(lower)
    present = set(words)
    found = {name: not present.isdisjoint(keywords) for name, keywords in _KEYWORDS.items()}
    found["fraction"] = found["fraction"] or _FRACTION.search(head) is not None
    found["rate"] = found["rate"] or _KM_H.search(lower) is not None
    percent = "%" in head or any(w.startswith("percent") for w in present)
    return np.array(
        [
            np.log1p(len(_TOKEN.findall(head))),
            np.log1p(max(len(ends), 1)),
            np.log1p(len(set(numbers))),
            np.log1p(min(largest, 1e12)),
            np.log1p(len(question)),
            np.log1p(sum(w in _NUMBER_WORDS for w in words)),
            float(any("." in n for n in numbers)),
            float(found["fraction"]),
            float(percent),
            float("$" in head),
            *(float(found[name]) for name in ("time", "times", "each", "rate", "left", "if")),
        ],
        np.float32,
    )


def terms(text: str) -> npt.NDArray[np.uint32]:
    """Hashes of the text's words and bigrams, with repeats (one entry per occurrence)."""
    words = _TOKEN.findall(text[:SCAN].lower())
    if not words:
        return np.empty(0, np.uint32)
    unigrams = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
    bigrams = (unigrams[:-1] * np.uint64(0x9E3779B1) + unigrams[1:] + np.uint64(1)) & np.uint64(
        0xFFFFFFFF
    )
    return np.concatenate([unigrams, bigrams]).astype(np.uint32)


def term_counts(text: str) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
    """(distinct term hashes, sorted; the sublinear term frequency 1 + log(count) of each)."""
    hashed, counts = np.unique(terms(text), return_counts=True)
    return hashed, (1.0 + np.log(counts)).astype(np.float32)


def tfidf_rows(
    texts: list[str], vocabulary: npt.NDArray[np.uint32], idf: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The L2-normalized TF-IDF rows of ``texts`` over a sorted ``vocabulary``, as coordinates
    (row, column, value); terms outside the vocabulary are dropped."""
    rows, columns, values = [], [], []
    for i, text in enumerate(texts):
        hashed, tf = term_counts(text)
        at = np.searchsorted(vocabulary, hashed)
        at[at == len(vocabulary)] = 0
        known = vocabulary[at] == hashed if len(vocabulary) else np.zeros(len(hashed), bool)
        at, weight = at[known], tf[known] * idf[at[known]]
        norm = float(np.sqrt(weight @ weight))
        if norm > 0:
            rows.append(np.full(len(at), i, np.int64))
            columns.append(at.astype(np.int64))
            values.append(weight / norm)
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(rows), np.concatenate(columns), np.concatenate(values)
