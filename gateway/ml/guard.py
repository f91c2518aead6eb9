"""The meaning guard: the rules of :mod:`~gateway.ml.rules`, the opposite-meaning check of
:mod:`~gateway.ml.opposites`, then the learned verifier.

The opposite-meaning check (a word on one side, its antonym or prefixed opposite on the other:
enable/disable, cheap/expensive, legal/illegal) runs with the rules, vectors or not: like them it
is a hard veto, with its own reason (:attr:`Veto.OPPOSITE`).

The learned verifier: when :func:`check` is given the two texts' vectors as well, a pair that
passes every rule must also convince the trained verifier of :mod:`~gateway.ml.verifier`
(an MLP ensemble trained on the development half of QQP), which judges what no rule names
("learn Java" / "learn Java quickly"). The rules stay hard vetoes: the verifier can only refuse
more. :class:`Guard` binds a particular verifier; :func:`check` uses the committed one, loaded
on first use (:func:`default_guard`; ``SemanticCache.open`` loads it at start).

Both read only the first :data:`MAX_CHARS` characters of each text, so the semantic cache keeps
no more than that of a stored question.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.ml import opposites, rules
from gateway.ml.rules import MAX_CHARS, Reason, same_question
from gateway.ml.verifier import Verifier

__all__ = [
    "MAX_CHARS",
    "Guard",
    "Reason",
    "Verdict",
    "Veto",
    "check",
    "check_rules",
    "default_guard",
    "same_question",
]


class Veto(StrEnum):
    """The guard's reasons beyond the rules' :class:`Reason`."""

    OPPOSITE = "opposite"
    """One text has a word whose opposite the other has instead."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: ``ok`` unless some check vetoed the pair, then ``reason`` says which."""

    ok: bool
    reason: Reason | Veto | None = None
    detail: str = ""

    def __bool__(self) -> bool:
        return self.ok


def check_rules(a: str, b: str) -> Verdict:
    """The hard vetoes, without vectors: the rules, then the opposite-meaning check."""
    verdict = rules.check_rules(a, b)
    if not verdict.ok:
        return Verdict(False, verdict.reason, verdict.detail)
    pair = opposites.opposed(a, b)
    if pair is not None:
        return Verdict(False, Veto.OPPOSITE, "/".join(pair))
    return Verdict(True)


class Guard:
    """The rules and one learned verifier (``None``: the rules alone)."""

    def __init__(self, verifier: Verifier | None, cutoff: float | None = None) -> None:
        self.verifier = verifier
        self.cutoff = cutoff if cutoff is not None or verifier is None else verifier.cutoff
        """Pairs the verifier gives a lower probability are refused (default: the artifact's;
        lower serves more paraphrases and more wrong answers, see bench/cache/RESULTS.md)."""

    @classmethod
    def load(cls, path: Path | None = None, cutoff: float | None = None) -> Guard:
        """The rules and the verifier artifact at ``path`` (default: the committed one);
        blocking, call it at start (it reads the antonym table too)."""
        opposites.default_table()
        return cls(Verifier.load(path), cutoff)

    def with_cutoff(self, cutoff: float | None) -> Guard:
        """The same rules and verifier, refusing below ``cutoff`` (None: the artifact's)."""
        return Guard(self.verifier, cutoff)

    def check(
        self,
        a: str,
        b: str,
        u: npt.NDArray[np.float32] | None = None,
        v: npt.NDArray[np.float32] | None = None,
    ) -> Verdict:
        """Whether ``a`` (vector ``u``) and ``b`` (vector ``v``) may be the same question: the
        rules and the opposite check, then, when both vectors are given, the verifier."""
        verdict = check_rules(a, b)
        if not verdict.ok or self.verifier is None or u is None or v is None:
            return verdict
        probability = self.verifier.probability(a, b, u, v)
        if self.cutoff is not None and probability < self.cutoff:
            return Verdict(False, Reason.VERIFIER, f"p={probability:.3f}")
        return verdict


_default: Guard | None = None
_default_lock = threading.Lock()


def default_guard() -> Guard:
    """The rules and the committed verifier, loaded once per process (thread-safe)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Guard.load()
    return _default


def check(
    a: str,
    b: str,
    u: npt.NDArray[np.float32] | None = None,
    v: npt.NDArray[np.float32] | None = None,
) -> Verdict:
    """Whether ``a`` and ``b`` may be the same question; the first failed check is the reason.
    With the two vectors the committed learned verifier judges too (see the module docstring);
    without them, the hard vetoes alone (rules and opposites)."""
    if u is None or v is None:
        return check_rules(a, b)
    return default_guard().check(a, b, u, v)
