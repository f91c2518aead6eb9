"""The classify stage: a request's difficulty in [0, 1] and its category, from the shared
embedding and cheap text features.

Difficulty is the probability that the small model falls short of the large one on this
request. It comes from a small trained head (see ``gateway/router/head.py`` for what it is and
why) whose weights are a committed artifact, ``gateway/data/router_head.npz``, reproducible
with ``gateway router train``. The category (code, math, reasoning, creative, chat, other)
comes from keyword rules: they are transparent, cheap and easy to adjust, and the training data
(MMLU and GSM8K) has no category labels to learn from.

The hot path is numpy only (no torch); its figures on the shared 2-core machine are in
bench/router/RESULTS.md (the regexes and the head read at most the first 4,000 characters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.ml.head import Head
from gateway.ml.text import message_text, request_text

CATEGORIES = ("code", "math", "reasoning", "creative", "chat", "other")
DEFAULT_HEAD = Path(__file__).resolve().parent.parent / "data" / "router_head.npz"
DEPLOYMENT_HEAD = Path("router") / "head.npz"
"""Under the data dir: a head retrained on the deployment's own traffic (``gateway router train
--from-ledger``), which serving loads instead of the shipped one when it exists."""
_SCAN = 4000  # characters of a long prompt that the rules read

_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+[:(]|\bimport \w+|#include\s*<|\bfunction\s*\w*\(|=>|"
    r"\bconst \w+ =|"
    r"\b(?:select .+ from|insert into|create table)\b|\bconsole\.log\(|\bprintf?\(|\breturn \w+;|"
    r"\b(?:python|javascript|typescript|java|c\+\+|golang|rust|sql|regex|bash|html|css|api|"
    r"json|yaml|dockerfile|kubernetes|git|compile[rd]?|debug\w*|stack ?trace|exception|"
    r"function|variable|algorithm|recursion|code|script|program(?:ming)?|refactor|unit tests?)\b",
    re.IGNORECASE,
)
_MATH = re.compile(
    r"\d\s*[-+*/^×÷=<>]\s*\d|\\(?:frac|sqrt|int|sum|cdot)|\$[^$\n]+\$|"
    r"\b(?:solve|calculate|compute|equation|integral|derivative|probability|percent(?:age)?|"
    r"how (?:many|much)|average|sum of|product of|remainder|prime|factor(?:ial|s)?|polynomial|"
    r"matrix|theorem|prove that|geometry|triangle|fraction|ratio)\b",
    re.IGNORECASE,
)
_CREATIVE = re.compile(
    r"\b(?:write|compose|draft|create|invent|imagine)\b.{0,40}\b(?:poem|story|song|lyrics|haiku|"
    r"limerick|sonnet|essay|script|dialogue|tale|novel|joke|slogan|tagline|speech|letter|rap)\b|"
    r"\b(?:poem|haiku|short story|fiction|role-?play|pretend you are)\b",
    re.IGNORECASE | re.DOTALL,
)
_REASONING = re.compile(
    r"\b(?:why|explain|reason(?:ing)?|step by step|compare|contrast|analy[sz]e|evaluate|"
    r"pros and cons|trade-?offs?|implications?|what would happen|puzzle|riddle|logic(?:al)?|"
    r"deduce|infer|argument|justify|which of the following|true or false)\b",
    re.IGNORECASE,
)
_CHAT = re.compile(
    r"^\s*(?:hi|hello|hey|thanks|thank you|good (?:morning|evening|night)|how are you|"
    r"what'?s up|who are you|yo)\b",
    re.IGNORECASE,
)
_CHOICE = re.compile(r"^\s*\(?[A-D][.)]\s", re.MULTILINE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True, slots=True)
class Features:
    """Cheap facts about a request, for the head and for policy rules."""

    chars: int
    """Characters of the cache text (the last user message)."""
    context_chars: int
    """Characters of the whole conversation."""
    turns: int
    """User messages in the conversation."""
    has_system: bool
    has_tools: bool
    has_code: bool
    has_math: bool
    numbers: int
    """Numbers in the cache text."""
    choices: int
    """Lines that look like multiple-choice options (``A.``, ``(b)``...)."""
    category: str
    text: str = field(default="", compare=False, repr=False)
    """The cache text (its first 4,000 characters), which the head reads in ``classify()``, off
    the event loop, so that computing features stays a few regex scans."""

    def vector(self) -> npt.NDArray[np.float32]:
        """The features the head reads (the ones the single-turn training data can teach)."""
        return np.array(
            [
                np.log1p(self.chars),
                np.log1p(self.numbers),
                float(self.has_code),
                float(self.has_math),
                float(self.choices >= 2),
            ],
            np.float32,
        )


FEATURE_NAMES = ("log_chars", "log_numbers", "has_code", "has_math", "multiple_choice")


def features_of(messages: Sequence[Mapping[str, Any]], has_tools: bool = False) -> Features:
    """The features of a chat request (messages in OpenAI's shape)."""
    text = request_text(messages)
    return _features(
        text,
        context_chars=sum(len(message_text(m)) for m in messages),
        turns=sum(1 for m in messages if m.get("role") == "user"),
        has_system=any(m.get("role") in ("system", "developer") for m in messages),
        has_tools=has_tools,
    )


def features_of_text(text: str) -> Features:
    """The features of a single-turn prompt."""
    return _features(text, context_chars=len(text), turns=1, has_system=False, has_tools=False)


def _features(
    text: str, *, context_chars: int, turns: int, has_system: bool, has_tools: bool
) -> Features:
    head = text[:_SCAN]
    has_code = _CODE.search(head) is not None
    has_math = _MATH.search(head) is not None
    return Features(
        chars=len(text),
        context_chars=context_chars,
        turns=turns,
        has_system=has_system,
        has_tools=has_tools,
        has_code=has_code,
        has_math=has_math,
        numbers=len(_NUMBER.findall(head)),
        choices=len(_CHOICE.findall(head)),
        category=_category(head, has_code=has_code, has_math=has_math, has_tools=has_tools),
        text=head,
    )


def _category(text: str, *, has_code: bool, has_math: bool, has_tools: bool) -> str:
    # Order matters: a request to write code about a poem is code; a story problem with numbers
    # is math; an explicit creative ask beats the generic reasoning words.
    if has_code and (_CODE.search(text[:600]) or has_tools):
        return "code"
    if _CREATIVE.search(text):
        return "creative"
    if has_math:
        return "math"
    if _REASONING.search(text):
        return "reasoning"
    if _CHAT.search(text) and len(text) < 200:
        return "chat"
    return "other" if len(text) >= 200 else "chat"


@dataclass(frozen=True, slots=True)
class Judgement:
    difficulty: float
    """Probability in [0, 1] that the small model falls short of the large one."""
    category: str


class Classifier:
    """The trained head plus the category rules; load once at start, share across requests."""

    def __init__(self, head: Head) -> None:
        self.head = head

    @classmethod
    def load(cls, path: Path | None = None) -> Classifier:
        """Load a head artifact (default: the committed ``gateway/data/router_head.npz``)."""
        return cls(Head.load(path or DEFAULT_HEAD))

    @classmethod
    def for_deployment(cls, data_dir: Path) -> Classifier:
        """The deployment's retrained head when there is one, else the shipped head."""
        mine = data_dir / DEPLOYMENT_HEAD
        return cls.load(mine if mine.exists() else None)

    @property
    def embedder_signature(self) -> dict[str, Any]:
        """The embedder settings the head was trained with; load ``Embedder`` with these."""
        return dict(self.head.embedder)

    def check_embedder(self, signature: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` when vectors from an embedder with this signature do not fit."""
        self.head.check_embedder(signature)

    def classify(self, vector: npt.NDArray[np.float32], features: Features) -> Judgement:
        """Judge one request from its embedding (a unit-length row) and features."""
        difficulty = self.head.difficulty(
            vector[None, :], features.vector()[None, :], [features.text]
        )
        return Judgement(float(difficulty[0]), features.category)

    def classify_many(
        self, vectors: npt.NDArray[np.float32], features: Sequence[Features]
    ) -> list[Judgement]:
        """Judge many requests at once (CLI, batch scoring)."""
        extra = np.stack([f.vector() for f in features]) if features else None
        difficulty = self.head.difficulty(vectors, extra, [f.text for f in features])
        return [Judgement(float(d), f.category) for d, f in zip(difficulty, features, strict=True)]
