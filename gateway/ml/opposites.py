"""Opposite meanings: the meaning guard's check that two texts do not differ by a word and its
opposite ("How do I enable 2FA?" / "How do I disable 2FA?").

Sentence embeddings place a question and its opposite side by side (all-MiniLM-L6-v2 scores
"turn on" / "turn off" above 0.95), and QQP, which the learned verifier is trained on, has few
such pairs, so neither the cosine nor the verifier refuses them. Two general sources decide
instead, both read only on the words that one text has and the other lacks:

- **antonyms from WordNet**: ``gateway/data/antonyms.tsv``, derived once from WordNet 3.0 by
  ``gateway cache build-antonyms`` (:mod:`gateway.training.cache.antonyms`: direct antonyms,
  indirect adjective antonyms, derived forms of a direct pair). A word is looked up as written
  and as the lemmas that WordNet's own rules of detachment (``morphy``: -s, -es, -ed, -ing,
  -er, -est) and its irregular forms (worst -> bad, lost -> lose) give;
- **opposing prefixes**: one word is another with a negating prefix (un-, dis-, de-, in-, im-,
  il-, ir-, non-, anti-, mis-: install/uninstall, legal/illegal), or the two share a stem behind
  prefixes of opposite sense (enable/disable, import/export, upload/download,
  increase/decrease, overestimate/underestimate, input/output). A negated stem must have at
  least :data:`_MIN_STEM` letters, so short words that merely start alike ("bug"/"debug") are
  left alone;
- **particles**: in/out, on/off, up/down ("zoom in" / "zoom out", "turn on" / "turn off").

Plain negation ("not", "never", "without") is the rules' business (:mod:`gateway.ml.rules`).

Cost: each text's word set (memoised), a set difference each way, and a few dictionary look-ups
per differing word (lemmas memoised); microseconds per candidate. The table is read once per
process (about 20k words, a few hundred milliseconds on a loaded core).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from gateway.ml import rules
from gateway.ml.memo import TextMemo

__all__ = ["DEFAULT_TABLE", "AntonymTable", "default_table", "opposed", "prefixed", "words"]

DEFAULT_TABLE = Path(__file__).resolve().parent.parent / "data" / "antonyms.tsv"

_NEGATING = ("un", "dis", "de", "in", "im", "il", "ir", "non", "anti", "mis")
_OPPOSING = (
    ("en", "dis"),
    ("en", "de"),
    ("in", "ex"),
    ("im", "ex"),
    ("in", "out"),
    ("in", "de"),
    ("up", "down"),
    ("over", "under"),
    ("pre", "post"),
    ("max", "min"),
)
_PARTICLES = frozenset(
    pair for a, b in (("in", "out"), ("on", "off"), ("up", "down")) for pair in ((a, b), (b, a))
)
"""Phrasal-verb particles ("zoom in" / "zoom out", "turn on" / "turn off"): opposed to each
other only; the table leaves them out, since WordNet opposes their adjective senses to content
words ("out" / "successful")."""
_MIN_STEM = 4
# WordNet's rules of detachment (morphy), all parts of speech at once: (suffix, replacement).
_DETACH = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
)


class AntonymTable:
    """Word -> its opposites, and irregular form -> lemmas; build with :meth:`load`."""

    def __init__(self, opposites: dict[str, frozenset[str]], irregular: dict[str, tuple[str, ...]]):
        self.opposites = opposites
        self.irregular = irregular
        self.lemmas = functools.lru_cache(maxsize=65536)(self._lemmas)
        """The table's words that ``word`` may be a form of (itself included); memoised."""

    @classmethod
    def load(cls, path: Path | None = None) -> AntonymTable:
        """Read a table file (default: the shipped one); see the builder for its format."""
        pairs: dict[str, set[str]] = {}
        irregular: dict[str, tuple[str, ...]] = {}
        exceptions = False
        for line in (path or DEFAULT_TABLE).read_text(encoding="utf-8").splitlines():
            if line == "#exceptions":
                exceptions = True
            elif line and not line.startswith("#"):
                word, others = line.split("\t", 1)
                if exceptions:
                    irregular[word] = tuple(others.split())
                    continue
                for other in others.split():  # each pair is written once
                    pairs.setdefault(word, set()).add(other)
                    pairs.setdefault(other, set()).add(word)
        return cls({w: frozenset(o) for w, o in pairs.items()}, irregular)

    def _lemmas(self, word: str) -> frozenset[str]:
        found = {word} if word in self.opposites else set()
        found.update(self.irregular.get(word, ()))
        for suffix, replacement in _DETACH:
            if word.endswith(suffix) and len(word) > len(suffix) + 1:
                base = word[: -len(suffix)] + replacement
                if base in self.opposites:
                    found.add(base)
        if word.endswith(("ed", "ing", "er", "est")):  # stopped -> stop, bigger -> big
            base = word[: -3 if word.endswith(("ing", "est")) else -2]
            if len(base) > 2 and base[-1] == base[-2] and base[:-1] in self.opposites:
                found.add(base[:-1])
        return frozenset(found)

    def antonyms(self, x: str, y: str) -> bool:
        """Whether some lemma of ``x`` has some lemma of ``y`` among its opposites."""
        ly = self.lemmas(y)
        return bool(ly) and any(not ly.isdisjoint(self.opposites[w]) for w in self.lemmas(x))


def prefixed(x: str, y: str) -> bool:
    """Whether ``x`` and ``y`` are a word and its negating-prefix form (a stem of at least
    :data:`_MIN_STEM` letters), or share a stem of at least three behind two prefixes of
    opposite sense (input/output)."""
    short, long = sorted((x, y), key=len)
    for prefix in _NEGATING:
        if long == prefix + short and len(short) >= _MIN_STEM:
            return True
    for p, q in _OPPOSING:
        for a, b in ((x, y), (y, x)):
            stem = a[len(p) :]
            if a.startswith(p) and b.startswith(q) and stem == b[len(q) :] and len(stem) >= 3:
                return True
    return False


def opposed(a: str, b: str, table: AntonymTable | None = None) -> tuple[str, str] | None:
    """The first (word of ``a``, word of ``b``) that are opposites, among the words that one
    text has more often than the other; ``None`` when there is none."""
    table = table or default_table()
    x, y = words(a), words(b)
    only_a = sorted(w for w, n in x.items() if n > y.get(w, 0))
    only_b = sorted(w for w, n in y.items() if n > x.get(w, 0))
    for u, v in itertools.product(only_a, only_b):
        if (u, v) in _PARTICLES or prefixed(u, v) or table.antonyms(u, v):
            return u, v
    return None


def words(text: str) -> Mapping[str, int]:
    """The lower-case alphabetic words of the first ``rules.MAX_CHARS`` characters of ``text``
    and how often each occurs (memoised): as written, since the table's lemma look-up does the
    stemming. Counted, so that "zoom in on a page in Reader" / "zoom out on a page in Reader"
    differ by in/out although both say "in"."""
    return _memo(text[: rules.MAX_CHARS])


_WORD = re.compile(r"[^\W\d_]+")
_memo: TextMemo[Mapping[str, int]] = TextMemo(
    lambda text: Counter(_WORD.findall(text.lower())),
    lambda found: 240 + sum(100 + len(w) for w in found),
    max_entries=8192,
    max_bytes=16 * 1024 * 1024,
)


@functools.cache
def default_table() -> AntonymTable:
    """The shipped table, read once per process (two threads that race to it read it twice,
    and one of the two copies is kept: harmless)."""
    return AntonymTable.load()
