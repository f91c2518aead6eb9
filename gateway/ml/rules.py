"""The meaning guard's rules: a cheap veto on pairs whose embeddings are close but whose
answers differ.

Sentence embeddings barely move when one token flips the answer: "flights from Paris to London"
and "from London to Paris" score 0.98 with all-MiniLM-L6-v2, as do "best phone under 10k" /
"under 15k" and "popular forums in Canada" / "in Germany". A semantic hit must therefore pass
every check below as well as the score threshold:

- **numbers**: the same numbers ("10k" = "10,000" = 10000, "2" = "two"). A number written in
  digits on one side only is a difference; a number *word* on one side only is not, when the
  other side has no number at all ("two essential elements" / "the essential elements").
- **negation**: both texts negated or neither (not, n't, never, no, without, and polarity
  words such as "absence", "lack", "unable", "avoid", so "if there is no script" = "in the
  absence of a script"); "No," as an answer and "not only" do not count.
- **entities**: every name-like token of one text (capitalised mid-sentence, an acronym, a
  token with digits or dots, CamelCase) occurs in the other, ignoring case, plurals,
  possessives and small suffixes ("India"/"Indian"); "ML" matches "machine learning".
- **direction**: two words that one text places on either side of "to", "from", "into",
  "than", "over", "before", "after" ... (within 3 words) and the other swaps ("USD to EUR" /
  "EUR to USD", "Is Python faster than Java?" / "Is Java faster than Python?"). Only for texts
  up to 40 tokens: in long paraphrases reordered clauses would look like reversals.
- **question word**: two questions opening with different ones of when / where / who.

How the rules were chosen, from the data (the development half of QQP and the GPTCache
paraphrases; numbers in bench/cache/RESULTS.md): counting the check and the label of every pair
above cosine 0.8 that a rule vetoes. Rules that vetoed real paraphrases in bulk were narrowed:
counting negations instead of testing for one, any wh-word anywhere (relative "where"/"when"
in statements; "why" asked as "what is the reason"), direction over whole sentences, number
words, shouted words as acronyms, dotted paths (``datasets.Metric`` ~ ``Metric``). What remains
vetoes about as many QQP positives as negatives (QQP's labels call "in Washington" / "in
Michigan" the same question), but on the paraphrases it costs 4% of recall at cosine 0.8, and
every vetoed hard negative is a wrong answer that is not served.

What is read: the first ``MAX_CHARS`` (4000) characters of a text, and of those its first 400
words; a pasted document is judged by its opening, which is also all that the semantic cache
keeps of a stored question (:data:`MAX_CHARS`). So a 4 MiB prompt costs what its opening costs.

Cost: regular expressions and set operations, tens of microseconds per text on an idle core;
analyses are memoised by a digest of that prefix, bounded in entries and bytes
(:mod:`~gateway.ml.memo`), so a stored entry is analysed once while it stays in the memo.

The guard that combines these rules with the learned verifier is :mod:`gateway.ml.guard`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from enum import StrEnum

from gateway.ml.memo import TextMemo

__all__ = [
    "MAX_CHARS",
    "Analysis",
    "Reason",
    "Verdict",
    "analyse",
    "check_rules",
    "same_question",
]


class Reason(StrEnum):
    """Why the guard vetoed a pair."""

    NUMBERS = "numbers"
    NEGATION = "negation"
    ENTITIES = "entities"
    DIRECTION = "direction"
    QUESTION_WORD = "question_word"
    VERIFIER = "verifier"
    """The learned verifier judged the pair different."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: ``ok`` unless some check vetoed the pair, then ``reason`` says which."""

    ok: bool
    reason: Reason | None = None
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _words(text: str) -> list[str]:
    return text.split()


# Words: letters/digits joined by ' . , & + # (C++, C#, node.js, don't, AT&T, 3.5, 10,000);
# hyphens split ("state-of-the-art" is four words).
_TOKEN = re.compile(r"[^\W_]+(?:[.,'’&][^\W_]+)*[+#]*")
_NUMBER = re.compile(r"^(\d+(?:[.,]\d+)*)(k|m|bn|st|nd|rd|th|s)?$", re.IGNORECASE)
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        _words(
            "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen twenty "
        )
    )
    if w != "_"
} | {
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "million": 10**6,
    "billion": 10**9,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "twice": 2,
    "dozen": 12,
    "half": 0.5,
}
_NUMBER_WORDS |= {
    "hundreds": 100, "thousands": 1000, "millions": 10**6, "billions": 10**9, "dozens": 12,
}  # fmt: skip
# "one" and "first" are left out on purpose: "one of the best", "at first" are not numbers.
_SCALE = {"k": 1000, "m": 10**6, "bn": 10**9}

_NEGATIONS = frozenset(
    _words(
        "not no never none nobody nothing neither nor without cannot cant dont doesnt didnt "
        "isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt aint "
        # words that carry the same polarity, so "in the absence of X" = "if there is no X"
        "non absence absent lack lacks lacking avoid avoids avoiding omit omits omitting "
        "prevent prevents unable "
    )
)

# Function words and common sentence words never count as names, even capitalised ("Is", "Of").
_COMMON = frozenset(
    _words(
        "a an the and or but if then than so to of in on at by for from with without into onto "
        "over under about after before between through during as is are was were be been being "
        "am do does did done have has had having i me my mine we us our you your yours he him "
        "his she her hers it its they them their what which who whom whose when where why how "
        "whether that this these those there here can could should would will shall may might "
        "must not no yes all any some each every both few more most other such only own same "
        "very just also too now ever never get got make best good better way ways one first new "
        "old much many lot lots thing things people person someone something anyone anything "
        "everyone everything life time year years day days please tell know think want need "
        "like really quora e.g i.e etc vs "
    )
)

_WH = {"when": "when", "where": "where", "who": "who", "whom": "who", "whose": "who"}
# Words whose two sides are not interchangeable: "A to B", "from A", "A than B", "A over B".
_DIRECTION_MARKERS = frozenset(
    _words("to into onto toward towards from than over before after until versus ")
)


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the guard needs from one text; computed once per distinct text."""

    words: frozenset[str]
    """Normalised lower-case tokens (plurals and possessives stripped)."""
    numbers: frozenset[str]
    """Canonical numbers, digits and number words alike."""
    digits: bool
    """Whether any number is written with digits."""
    negated: bool
    entities: frozenset[str]
    initials: str
    """First letters of the words, in order: an acronym of a run of words is a substring
    ("natural language processing" -> "nlp")."""
    sides: tuple[tuple[str, frozenset[str], frozenset[str]], ...]
    """(marker, content words just left of it, content words just right of it)."""
    wh: str | None
    """The question word the text opens with, when it is when/where/who."""
    length: int
    """Tokens in the text."""


def _norm(token: str) -> str:
    t = token.lower().replace("’", "'")  # idempotent on already-lowered tokens
    if t.endswith("'s"):
        t = t[:-2]
    t = t.rstrip("'")
    if len(t) > 4 and t.endswith("ies"):
        return t[:-3] + "y"
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss") and t.isalpha():
        return t[:-1]
    return t


def _number(token: str) -> str | None:
    """A canonical spelling of a number token ("10k" -> "10000", "two" -> "2"), else None."""
    low = token.lower()
    if low in _NUMBER_WORDS:
        return f"{_NUMBER_WORDS[low]:g}"
    m = _NUMBER.match(low)
    if not m:
        return None
    digits, suffix = m.group(1), (m.group(2) or "").lower()
    if digits.count(".") > 1:  # a version such as 1.2.3: compared as written
        return digits
    return f"{float(digits.replace(',', '')) * _SCALE.get(suffix, 1):g}"


def _is_name(token: str, sentence_start: bool, title_case_text: bool) -> bool:
    if not token.isalpha() and (
        any(c.isdigit() for c in token) or "." in token[1:-1] or token[-1] in "+#"
    ):
        return True  # C2180, node.js, C++
    if token.isupper():
        return 2 <= len(token) <= 5  # NASA, but not a shouted word (AVAILABLE)
    if len(token) > 1 and not token[1:].islower() and any(c.isupper() for c in token[1:]):
        return True  # WordPress, iPhone
    return token[0].isupper() and not sentence_start and not title_case_text


_WINDOW = 3
_DIRECTION_MAX_TOKENS = 40  # past this, clause reordering in paraphrases outweighs reversals
_MAX_TOKENS = 400
MAX_CHARS = 4000
"""The guard reads at most this prefix of a text (rules and learned verifier alike): a pasted
document is judged by its opening, and a stored entry need keep no more of its question."""
_SENTENCE_BREAK = re.compile(r"[.?!:;\n\"(]")


def analyse(text: str) -> Analysis:
    """What the checks compare in the first :data:`MAX_CHARS` characters of ``text``
    (memoised)."""
    return _memo(text[:MAX_CHARS])


def _analyse(text: str) -> Analysis:
    # A pasted document: the checks look at its first _MAX_TOKENS words only.
    matches = list(itertools.islice(_TOKEN.finditer(text), _MAX_TOKENS))
    tokens = [m.group(0) for m in matches]
    lowered = [t.lower().replace("’", "'") for t in tokens]
    lows = [_norm(t) for t in lowered]
    content = [low not in _COMMON for low in lowered]
    alpha = [t for t, c in zip(tokens, content, strict=True) if c and t[0].isalpha()]
    title_case = len(alpha) >= 3 and sum(t[0].isupper() for t in alpha) >= 0.7 * len(alpha)

    numbers: set[str] = set()
    entities: set[str] = set()
    digits = negated = False
    previous_end = 0
    for i, m in enumerate(matches):
        token, low = tokens[i], lowered[i]
        if not content[i] and low not in _NEGATIONS:
            previous_end = m.end()
            continue
        value = _number(token) if (token[0].isdigit() or low in _NUMBER_WORDS) else None
        if value is not None:
            numbers.add(value)
            digits = digits or token[0].isdigit()
        elif low.endswith("n't") or low.replace("'", "") in _NEGATIONS:
            following = lowered[i + 1] if i + 1 < len(lowered) else ""
            answer_no = low == "no" and text[m.end() : m.end() + 1] == ","
            if not (answer_no or (low == "not" and following == "only")):
                negated = True
        else:
            start = m.start()
            sentence_start = start == 0 or bool(_SENTENCE_BREAK.search(text, previous_end, start))
            if _is_name(token, sentence_start, title_case):
                # A dotted path is named by its last part: datasets.Metric ~ Metric.
                entities.add(lows[i].rsplit(".", 1)[-1] if "." in lows[i][1:-1] else lows[i])
        previous_end = m.end()
    # Direction: the content words within a short window on each side of each marker, so a
    # long paraphrase that reorders its clauses is not taken for a reversal.
    sides: list[tuple[str, frozenset[str], frozenset[str]]] = []
    for i, low in enumerate(lows):
        if low in _DIRECTION_MARKERS:
            left = frozenset(
                lows[j] for j in range(max(0, i - _WINDOW), i) if content[j] and lows[j] != low
            )
            right = frozenset(
                lows[j]
                for j in range(i + 1, min(len(lows), i + 1 + _WINDOW))
                if content[j] and lows[j] != low
            )
            if left and right:
                sides.append((low, left, right))
    initials = "".join(w[0] for w in lows if w and w[0].isalpha())
    first = lowered[0] if lowered else ""
    return Analysis(
        words=frozenset(lows) | {w.rsplit(".", 1)[-1] for w in lows if "." in w[1:-1]},
        numbers=frozenset(numbers),
        digits=digits,
        negated=negated,
        entities=frozenset(entities),
        initials=initials,
        sides=tuple(sides),
        wh=_WH.get(first),
        length=len(tokens),
    )


def _sizeof(a: Analysis) -> int:
    """Roughly the bytes an analysis holds (CPython objects), for the memo's budget."""
    strings = a.words | a.numbers | a.entities
    return (
        800
        + sum(56 + len(w) for w in strings)
        + 64 * (len(a.words) + len(a.numbers) + len(a.entities))
        + len(a.initials)
        + sum(500 + 64 * (len(left) + len(right)) for _, left, right in a.sides)
    )


_memo = TextMemo(_analyse, _sizeof, max_entries=8192, max_bytes=32 * 1024 * 1024)
"""Analyses by digest of the text's prefix; a short question's is 1-3 KB, a 400-word one's
50-150 KB, so 32 MiB holds all 8192 short ones or a few hundred long ones."""


def missing_entities(x: Analysis, y: Analysis) -> list[str]:
    missing = []
    # Acronyms of y spelled by runs of x's words ("ML" for "machine learning") excuse those words.
    spelled = "".join(w for w in y.words if 2 <= len(w) <= 5 and w.isalpha() and w in x.initials)
    for entity in x.entities:
        if entity in y.words or (
            2 <= len(entity) <= 5 and entity.isalpha() and entity in y.initials
        ):
            continue
        if spelled and entity[0] in spelled:
            continue
        # A compound written apart or joined ("WordPress" / "Word press", "e-mail").
        if any(
            (w.startswith(entity) or entity.startswith(w)) and abs(len(w) - len(entity)) <= 3
            for w in y.words
            if len(w) >= 4
        ):
            continue
        missing.append(entity)
    return missing


def reversed_pair(x: Analysis, y: Analysis) -> str | None:
    """A pair of words that one text puts before and after a marker and the other swaps."""
    for marker, x_left, x_right in x.sides:
        for other, y_left, y_right in y.sides:
            if other != marker:
                continue
            moved_right = (x_left - x_right) & (y_right - y_left)
            moved_left = (x_right - x_left) & (y_left - y_right)
            if moved_right and moved_left:
                return f"{min(moved_right)} {marker} {min(moved_left)}"
    return None


def check_rules(a: str, b: str) -> Verdict:
    """The hand-written checks only; the first failed check is the reason."""
    x, y = analyse(a), analyse(b)
    if x.numbers != y.numbers and (x.digits or y.digits or (x.numbers and y.numbers)):
        # "two essential elements" vs "the essential elements" is wording; 10 vs 15, or a
        # number written in digits on one side only, is a different question.
        return Verdict(False, Reason.NUMBERS, ", ".join(sorted(x.numbers ^ y.numbers)))
    if x.negated != y.negated:
        return Verdict(False, Reason.NEGATION, "negated" if x.negated else "negated (stored)")
    missing = missing_entities(x, y) + missing_entities(y, x)
    if missing:
        return Verdict(False, Reason.ENTITIES, ", ".join(sorted(missing)))
    swapped = reversed_pair(x, y) if max(x.length, y.length) <= _DIRECTION_MAX_TOKENS else None
    if swapped:
        return Verdict(False, Reason.DIRECTION, swapped)
    if x.wh != y.wh and x.wh is not None and y.wh is not None:
        return Verdict(False, Reason.QUESTION_WORD, f"{x.wh}/{y.wh}")
    return Verdict(True)


def same_question(a: str, b: str) -> bool:
    """True unless the guard finds a difference in numbers, negation, entities, direction or
    question word between ``a`` and ``b``."""
    return check_rules(a, b).ok
