"""Calibrating the difficulty threshold of a policy to a target share of strong-model calls or a
target cost per million tokens, on the operator's own prompts.

The policy is read with ruamel.yaml (round trip), not through the typed schema, so that the
threshold can be written back in place with the file's comments and layout intact. The
"strong" model is the ``to:`` of the first rule whose ``when.difficulty`` has ``gte`` or
``gt``; that bound is the threshold. Every prompt is routed through the rules in order, with the
conditions a prompt file can answer (difficulty, category, prompt_tokens, has_tools,
has_images); rules that test anything else (tenant, tags, model) are taken as not matching.

The projection prices each prompt at its input tokens plus an assumed (or logged) number of
output tokens, at the routed model's ``price``.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ruamel.yaml import YAML
from ruamel.yaml.util import load_yaml_guess_indent

_EVALUABLE = {"difficulty", "category", "prompt_tokens", "has_tools", "has_images"}
NO_ROUTE = "(no route)"


class CalibrationError(Exception):
    """The policy or the target cannot be calibrated; the message says why."""


@dataclass(frozen=True, slots=True)
class Prompt:
    difficulty: float
    category: str
    input_tokens: int
    output_tokens: int
    prompt_tokens_estimate: int
    """The gateway's own estimate (UTF-8 bytes / 4), which ``when.prompt_tokens`` tests."""
    has_tools: bool = False
    has_images: bool = False


@dataclass(frozen=True, slots=True)
class PolicyRoutes:
    routes: list[Mapping[str, Any]]
    models: Mapping[str, Any]
    strong_rule: int
    """Index of the threshold rule in ``routes``."""
    bound: str
    """``gte`` or ``gt``."""
    strong: str
    weak: str | None
    baseline: str | None

    @property
    def threshold(self) -> float:
        return float(self.routes[self.strong_rule]["when"]["difficulty"][self.bound])

    @property
    def rule_name(self) -> str:
        return str(self.routes[self.strong_rule].get("name", f"#{self.strong_rule}"))

    @property
    def skipped_rules(self) -> list[str]:
        """Rules with conditions a prompt file cannot answer (taken as not matching)."""
        return [
            str(r.get("name", i))
            for i, r in enumerate(self.routes)
            if set(r.get("when") or {}) - _EVALUABLE
        ]

    def price(self, model: str) -> tuple[float, float]:
        """USD per million (input, output) tokens of a model."""
        price = (self.models.get(model) or {}).get("price") or {}
        if "input_per_mtok" in price and "output_per_mtok" in price:
            return float(price["input_per_mtok"]), float(price["output_per_mtok"])
        if "gpu_hour_usd" in price:
            hourly = float(price["gpu_hour_usd"]) * 1_000_000 / 3600
            return (
                hourly / float(price["input_tokens_per_s"]),
                hourly / float(price["output_tokens_per_s"]),
            )
        raise CalibrationError(f"the model {model!r} has no price in the policy")


def _yaml(text: str | None = None) -> YAML:
    """A round-trip YAML (keeps comments, key order, flow style and quotes) that writes block
    sequences with the same indentation as ``text``."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    if text is not None:
        _, sequence, offset = load_yaml_guess_indent(text)
        offset = offset or 0
        mapping = min(
            (
                len(line) - len(line.lstrip(" "))
                for line in text.splitlines()
                if line.startswith(" ") and not line.lstrip().startswith(("-", "#"))
            ),
            default=2,
        )
        yaml.indent(mapping=mapping, sequence=max(sequence or 2, offset + 2), offset=offset)
    return yaml


def read_policy(path: Path) -> tuple[Any, PolicyRoutes]:
    """The round-trip tree of a policy file and its routes, strong and weak models."""
    try:
        tree = _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many types; the message is what matters
        raise CalibrationError(f"{path}: not readable YAML: {exc}") from None
    if not isinstance(tree, Mapping) or not isinstance(tree.get("routes"), list):
        raise CalibrationError(f"{path}: no routes list")
    routes = list(tree["routes"])
    models = tree.get("models") or {}
    strong_rule, bound = -1, ""
    for i, route in enumerate(routes):
        difficulty = (route.get("when") or {}).get("difficulty")
        if isinstance(difficulty, Mapping):
            bound = next((b for b in ("gte", "gt") if b in difficulty), "")
            if bound:
                strong_rule = i
                break
    if strong_rule < 0:
        raise CalibrationError(
            f"{path}: no rule tests the difficulty with gte or gt; add one such as "
            "{name: hard-to-large, when: {difficulty: {gte: 0.5}}, to: large}"
        )
    weak = next((str(r["to"]) for r in reversed(routes) if not r.get("when")), None)
    baseline = tree.get("baseline_model")
    return tree, PolicyRoutes(
        routes=routes,
        models=models,
        strong_rule=strong_rule,
        bound=bound,
        strong=str(routes[strong_rule]["to"]),
        weak=weak,
        baseline=str(baseline) if baseline else None,
    )


def _in_range(value: float, bounds: Mapping[str, Any]) -> bool:
    checks: dict[str, Callable[[float, float], bool]] = {
        "gte": lambda v, b: v >= b,
        "gt": lambda v, b: v > b,
        "lte": lambda v, b: v <= b,
        "lt": lambda v, b: v < b,
    }
    return all(checks[k](value, float(b)) for k, b in bounds.items() if k in checks)


def _matches(when: Mapping[str, Any] | None, p: Prompt, *, skip_bound: str | None = None) -> bool:
    """Whether a prompt meets a rule's conditions (``skip_bound``: ignore that difficulty bound,
    the one being calibrated)."""
    if not when:
        return True
    if set(when) - _EVALUABLE:
        return False
    if "difficulty" in when:
        bounds = {k: v for k, v in when["difficulty"].items() if k != skip_bound}
        if not _in_range(p.difficulty, bounds):
            return False
    if "category" in when:
        wanted = when["category"]
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        if p.category not in names:
            return False
    if "prompt_tokens" in when and not _in_range(p.prompt_tokens_estimate, when["prompt_tokens"]):
        return False
    if "has_tools" in when and bool(when["has_tools"]) != p.has_tools:
        return False
    return not ("has_images" in when and bool(when["has_images"]) != p.has_images)


@dataclass(frozen=True, slots=True)
class Projection:
    threshold: float
    shares: dict[str, float]
    """Share of prompts per model (``(no route)`` for prompts no rule matches)."""
    cost_per_mtok: float
    """Projected USD per million tokens (input and output) over the prompts."""
    baseline_cost_per_mtok: float | None
    """The same if every prompt went to the baseline model (else the strong one)."""
    strong_share: float


@dataclass(frozen=True, slots=True)
class Calibration:
    chosen: Projection
    current: Projection
    reachable: bool
    """False when no threshold meets the target (``chosen`` is then the closest one)."""


def calibrate(
    policy: PolicyRoutes,
    prompts: Sequence[Prompt],
    *,
    target_strong_share: float | None = None,
    target_cost_per_mtok: float | None = None,
) -> Calibration:
    """The lowest threshold (the most strong calls) whose strong share, or cost per million
    tokens, stays within the target."""
    if (target_strong_share is None) == (target_cost_per_mtok is None):
        raise CalibrationError("give exactly one target: a strong share or a cost per Mtok")
    if not prompts:
        raise CalibrationError("no prompts to calibrate on")
    table = _Table(policy, prompts)
    projections = [table.project(t) for t in candidate_thresholds(table.eligible_difficulty)]
    if target_strong_share is not None:
        ok = [p for p in projections if p.strong_share <= target_strong_share + 1e-12]
        closest = min(projections, key=lambda p: p.strong_share)
    else:
        assert target_cost_per_mtok is not None
        ok = [p for p in projections if p.cost_per_mtok <= target_cost_per_mtok + 1e-12]
        closest = min(projections, key=lambda p: p.cost_per_mtok)
    chosen = min(ok, key=lambda p: p.threshold) if ok else closest
    current = table.project(policy.threshold, policy.bound)
    return Calibration(chosen=chosen, current=current, reachable=bool(ok))


class _Table:
    """Each prompt's route with the threshold rule on and off, and its price on each model,
    so that a threshold is evaluated with a few numpy operations."""

    def __init__(self, policy: PolicyRoutes, prompts: Sequence[Prompt]) -> None:
        self.policy = policy
        names = [*dict.fromkeys([policy.strong, *(str(r["to"]) for r in policy.routes)])]
        self.names = [*names, NO_ROUTE]
        column = {name: i for i, name in enumerate(self.names)}
        cut = policy.strong_rule
        rules = policy.routes
        fixed, alternative, eligible = [], [], []
        for p in prompts:
            first = next((i for i in range(cut) if _matches(rules[i].get("when"), p)), None)
            later = next(
                (i for i in range(cut + 1, len(rules)) if _matches(rules[i].get("when"), p)),
                None,
            )
            otherwise = column[str(rules[later]["to"])] if later is not None else column[NO_ROUTE]
            fixed.append(column[str(rules[first]["to"])] if first is not None else otherwise)
            alternative.append(otherwise)
            eligible.append(
                first is None and _matches(rules[cut].get("when"), p, skip_bound=policy.bound)
            )
        self.fixed = np.array(fixed)
        self.eligible = np.array(eligible, bool)
        self.difficulty = np.array([p.difficulty for p in prompts], np.float64)
        self.eligible_difficulty = self.difficulty[self.eligible]
        inputs = np.array([p.input_tokens for p in prompts], np.float64)
        outputs = np.array([p.output_tokens for p in prompts], np.float64)
        self.tokens = float(inputs.sum() + outputs.sum())
        prices = [policy.price(n) if n != NO_ROUTE else (0.0, 0.0) for n in self.names]
        # usd[i, m]: the price of prompt i on model m
        self.usd = (
            np.outer(inputs, [p[0] for p in prices]) + np.outer(outputs, [p[1] for p in prices])
        ) / 1e6
        base = self.names.index(policy.baseline) if policy.baseline in self.names else None
        base_price = (
            policy.price(policy.baseline or policy.strong) if base is None else prices[base]
        )
        self.baseline_usd = float((inputs * base_price[0] + outputs * base_price[1]).sum() / 1e6)

    def project(self, threshold: float, bound: str = "gte") -> Projection:
        above = self.difficulty >= threshold if bound == "gte" else self.difficulty > threshold
        chosen = np.where(self.eligible & above, 0, self.fixed)  # column 0 is the strong model
        n = len(chosen)
        counts = np.bincount(chosen, minlength=len(self.names))
        usd = float(self.usd[np.arange(n), chosen].sum())
        shares = {
            self.names[m]: int(c) / n
            for m, c in sorted(enumerate(counts), key=lambda mc: -mc[1])
            if c
        }
        return Projection(
            threshold=threshold,
            shares=shares,
            cost_per_mtok=usd / self.tokens * 1e6 if self.tokens else 0.0,
            baseline_cost_per_mtok=self.baseline_usd / self.tokens * 1e6 if self.tokens else None,
            strong_share=int(counts[0]) / n,
        )


def candidate_thresholds(values: npt.ArrayLike) -> list[float]:
    """Thresholds that split ``values`` at every distinct value, each placed halfway between
    two neighbouring values (so ``gte`` and ``gt`` agree) and rounded to the fewest decimals
    that keep it there; from "everything" (0.0) to "nothing" (above the largest value)."""
    distinct = np.unique(np.asarray(values, np.float64))
    if len(distinct) == 0:
        return [1.0]
    out = [0.0]
    for low, high in itertools.pairwise(distinct):
        out.append(_short_between(float(low), float(high)))
    top = float(distinct[-1])
    out.append(_short_between(top, 1.0) if top < 1.0 else math.nextafter(top, 2.0))
    return out


def _short_between(low: float, high: float) -> float:
    """A number in (low, high] with as few decimals as possible, near the midpoint."""
    mid = (low + high) / 2
    for digits in range(2, 12):
        value = round(mid, digits)
        if low < value <= high:
            return value
    return float(high)


def candidate_path(path: Path) -> Path:
    """Where ``write_threshold`` puts the new text while it is validated."""
    return path.with_name(f".{path.name}.calibrate.tmp{path.suffix}")


def write_threshold(
    path: Path,
    threshold: float,
    validate: Callable[[Path], object],
) -> None:
    """Set the threshold rule's bound to ``threshold`` in place, keeping comments and layout.

    The new text is validated (``validate``, normally ``gateway.policy.load.load_policy``) as
    a sibling file first and only then moved over the policy, so a running gateway that watches
    the file never sees an invalid policy; when validation fails the original file is left as
    it was and the validator's exception propagates.
    """
    original = path.read_text(encoding="utf-8")
    tree, routes = read_policy(path)
    tree["routes"][routes.strong_rule]["when"]["difficulty"][routes.bound] = float(threshold)
    buffer = io.StringIO()
    _yaml(original).dump(tree, buffer)
    candidate = candidate_path(path)
    candidate.write_text(buffer.getvalue(), encoding="utf-8")
    try:
        validate(candidate)
        os.replace(candidate, path)
    except BaseException:
        candidate.unlink(missing_ok=True)
        if path.read_text(encoding="utf-8") != original:  # pragma: no cover - paranoia
            path.write_text(original, encoding="utf-8")
        raise
