"""Derive the meaning guard's antonym table from a WordNet database directory, once.

``gateway cache build-antonyms --wordnet /usr/share/wordnet`` (Debian: ``apt-get install
wordnet-base``) writes ``gateway/data/antonyms.tsv``, which ships with the package, so the
gateway never needs WordNet at run time. The output depends only on the database (WordNet 3.0
in Debian), so the table is reproducible.

What is taken, and why (held-out pairs and their results in bench/cache/RESULTS.md):

- **direct antonyms** of every part of speech (WordNet's ``!`` pointers: open/close, buy/sell,
  increase/decrease), between the two synsets: WordNet links one lemma of each ("difficult" /
  "easy"), and its synonyms in that sense ("hard") are as opposed;
- **indirect adjective antonyms**: a satellite adjective is opposed to the antonyms of the head
  it is similar to (``&``): "cheap" is a satellite of "inexpensive", whose antonym is
  "expensive". Without them most everyday adjectives have no antonym in WordNet. Satellites
  are not opposed to each other's satellites: that multiplies the table a hundredfold with
  pairs such as open/black;
- **derived forms of a direct pair** (``+``): strong/weak gives strength/weakness and
  strong/weakness.

Multi-word lemmas ("zoom_in") and words with hyphens or digits are left out: the guard
compares single alphabetic words. Each line is ``word<TAB>opposite opposite ...`` in lower
case, sorted, each pair once (under its first word; the reader makes it symmetric); a ``#``
line at the top carries WordNet's notice. A second section, after a line ``#exceptions``,
lists the irregular forms (from WordNet's ``*.exc`` files) of words in the table:
``form<TAB>lemma ...``.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAX_RANK", "NOTICE", "build", "parse_data", "parse_ranks", "write"]

NOTICE = (
    "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. "
    "Derived from WordNet 3.0 under its license; see gateway/data/WORDNET_LICENSE."
)
_POS_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
MAX_RANK = 8
"""A word's sense is used only when it is among the word's ``MAX_RANK`` most frequent senses
(WordNet's index files order them by frequency in its tagged corpus): "can" is a verb of
dismissal in its second sense, opposed to "employ", and "take" has a sense opposed to "give",
but a question that says "can" or "takes" almost never means those."""


def _wordlist(text: str) -> list[str]:
    return text.split()


_CLOSED = frozenset(
    _wordlist(
        "be is am are was were been being do does did done have has had can could will would shall "
        "should may might must any no none all some each every one ones such own this that these "
        "those it its they there here what which who how why when where "
        "in out on off up down "
        "absence absent lack lacks lacking without avoid prevent unable"
    )
)
"""Function words: WordNet lists senses for some ("be" = "equal", opposed to "differ"), but in a
question they carry no polarity. Also left out: the particles in/out/on/off/up/down, whose
adjective senses WordNet opposes to content words ("out" = unsuccessful, "on" = on offer);
the guard opposes them to each other only (:mod:`gateway.ml.opposites`); and the words that the
rules already read as negation ("absence", "lack", "without": ``gateway.ml.rules``), whose
polarity the negation rule judges ("in the absence of X" = "if X is not present")."""


@dataclass(slots=True)
class Synset:
    """One synset of a ``data.*`` file: its words and the pointers this table needs."""

    words: list[str]
    antonyms: list[tuple[int, str, int]] = field(default_factory=list)
    """(source word index, target synset key, target word index), lexical ``!`` pointers."""
    similar: list[str] = field(default_factory=list)
    derived: list[tuple[int, str, int]] = field(default_factory=list)


def parse_data(path: Path, pos: str) -> Iterator[tuple[str, Synset]]:
    """The synsets of one ``data.<pos>`` file, keyed ``<pos>:<offset>`` (satellites ``s`` are
    keyed as adjectives, as WordNet's pointers name them)."""
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line or line.startswith(" "):
            continue  # the license header
        fields = line.split(" | ", 1)[0].split()
        offset, count = fields[0], int(fields[3], 16)
        words = [_clean(fields[4 + 2 * i]) for i in range(count)]
        at = 4 + 2 * count
        synset = Synset(words)
        for i in range(int(fields[at])):
            symbol, target, target_pos, link = fields[at + 1 + 4 * i : at + 5 + 4 * i]
            key = f"{'a' if target_pos == 's' else target_pos}:{target}"
            source, dest = int(link[:2], 16) - 1, int(link[2:], 16) - 1
            if symbol == "!":
                synset.antonyms.append((source, key, dest))
            elif symbol == "&":
                synset.similar.append(key)
            elif symbol == "+":
                synset.derived.append((source, key, dest))
        yield f"{pos}:{offset}", synset


def _clean(word: str) -> str:
    """A lemma as a reader sees it: lower case, without the adjective position marker."""
    return word.split("(", 1)[0].lower()


def build(wordnet: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(word -> its opposites, irregular form -> lemmas) from a WordNet dict directory."""
    synsets: dict[str, Synset] = {}
    ranks: dict[tuple[str, str], int] = {}
    for name, pos in _POS_FILES.items():
        synsets.update(parse_data(wordnet / f"data.{name}", pos))
        ranks.update(parse_ranks(wordnet / f"index.{name}", pos))
    opposites: dict[str, set[str]] = defaultdict(set)

    def frequent(senses: list[tuple[str, str]]) -> list[str]:
        return [
            w
            for w, key in senses
            if w.isalpha() and w not in _CLOSED and ranks.get((w, key), MAX_RANK + 1) <= MAX_RANK
        ]

    def oppose(left: list[tuple[str, str]], right: list[tuple[str, str]]) -> None:
        for x, y in itertools.product(frequent(left), frequent(right)):
            if x != y:
                opposites[x].add(y)
                opposites[y].add(x)

    for key, synset in synsets.items():
        for _, other, _ in synset.antonyms:
            oppose(_senses(synsets, key), _senses(synsets, other))
        for head in synset.similar if not synset.antonyms else ():
            # a satellite against the antonyms of its head: cheap ~ inexpensive ! expensive
            for _, other, _ in synsets[head].antonyms:
                oppose(_senses(synsets, key, derived=False), _senses(synsets, other, False))
    exceptions: dict[str, set[str]] = defaultdict(set)
    for name in _POS_FILES:
        exc = wordnet / f"{name}.exc"
        for line in exc.read_text(encoding="latin-1").splitlines():
            form, *lemmas = line.split()
            for lemma in lemmas:
                if lemma in opposites and form != lemma:
                    exceptions[form].add(lemma)
    return dict(opposites), dict(exceptions)


def parse_ranks(path: Path, pos: str) -> Iterator[tuple[tuple[str, str], int]]:
    """((lemma, synset key), rank) from one ``index.<pos>`` file: rank 1 is the lemma's most
    frequent sense."""
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line or line.startswith(" "):
            continue
        fields = line.split()
        count = int(fields[2])
        for rank, offset in enumerate(fields[len(fields) - count :], start=1):
            yield (fields[0], f"{pos}:{offset}"), rank


def _senses(synsets: dict[str, Synset], key: str, derived: bool = True) -> list[tuple[str, str]]:
    """(word, synset key) of a synset's words and, with ``derived``, of the words WordNet
    derives from them (``+``: strong -> strength)."""
    senses = [(w, key) for w in synsets[key].words]
    if derived:
        senses += [(synsets[k].words[dest], k) for _, k, dest in synsets[key].derived]
    return senses


def write(opposites: dict[str, set[str]], exceptions: dict[str, set[str]], out: Path) -> None:
    """The table file (see the module docstring)."""
    lines = [f"# {NOTICE}"]
    for word in sorted(opposites):
        later = sorted(o for o in opposites[word] if o > word)  # each pair once
        if later:
            lines.append(f"{word}\t{' '.join(later)}")
    lines.append("#exceptions")
    lines += [f"{f}\t{' '.join(sorted(exceptions[f]))}" for f in sorted(exceptions)]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
