"""Reading a policy file: YAML with positions, ``${ENV}`` references, strict validation.

Every problem is reported as ``file:line:col: $.key.path: message`` so that an operator (or an
editor's problem matcher) lands on the exact spot. All problems are collected, not just the
first, because fixing a file one error per run is slow.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from gateway.policy.schema import Policy, validate
from gateway.policy.secrets import MODEL_SECRETS, secret_name, url_credentials

KeyPath = tuple[str | int, ...]
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_PATHS = (
    *(("models", "*", *path) for path in MODEL_SECRETS),
    ("tenants", "*", "api_keys", "*"),
    ("admin", "api_keys", "*"),
)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    col: int
    path: KeyPath
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {format_path(self.path)}: {self.message}"


class PolicyError(Exception):
    """The file is not a valid policy; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.col))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    path: Path
    digest: str
    warnings: tuple[Problem, ...]


def format_path(path: KeyPath) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def load_policy(path: Path, environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Read, interpolate and validate ``path``; raises `PolicyError` listing every problem."""
    env = os.environ if environ is None else environ
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            [Problem(name, 1, 1, (), f"cannot read the file: {exc.strerror}")]
        ) from exc
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise PolicyError([Problem(name, line, col, (), f"invalid YAML: {exc.problem}")]) from exc
    if not isinstance(tree, CommentedMap):
        raise PolicyError([Problem(name, 1, 1, (), "the policy must be a mapping")])

    problems: list[Problem] = []
    data = _plain(tree, (), env, lambda p, m: problems.append(_at(name, tree, p, m)))
    warnings = tuple(
        _at(name, tree, p, "a literal secret; use an ${ENV_VAR} reference")
        for p in _literal_secrets(tree)
    )
    try:
        policy = Policy.model_validate(data)
    except pydantic.ValidationError as exc:
        leaves = _deepest(exc.errors(include_input=False), {p.path for p in problems})
        problems += [_at(name, tree, loc, message) for loc, message in leaves]
        raise PolicyError(problems) from exc
    problems += [_at(name, tree, p, m) for p, m in validate(policy)]
    if problems:
        raise PolicyError(problems)
    warnings += tuple(
        _at(
            name,
            tree,
            ("models", model),
            "no price: its requests are recorded with an unknown (null) cost, never zero",
        )
        for model, config in policy.models.items()
        if config.price is None
    )
    return LoadedPolicy(policy, path, hashlib.sha256(text.encode()).hexdigest()[:16], warnings)


def _deepest(errors: list[Any], reported: set[KeyPath]) -> list[tuple[KeyPath, str]]:
    """Keep only the deepest problem on each path.

    A missing variable already has its problem, and a bad item already explains why its list
    is too short: the second message would only be noise.
    """
    locs = [tuple(e["loc"]) for e in errors]
    every = [*reported, *locs]

    def shadowed(loc: KeyPath) -> bool:
        return loc in reported or any(len(o) > len(loc) and o[: len(loc)] == loc for o in every)

    return [(loc, _message(e)) for loc, e in zip(locs, errors, strict=True) if not shadowed(loc)]


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"])


def _plain(node: Any, path: KeyPath, env: Mapping[str, str], report: Any) -> Any:
    """The YAML tree as plain values, with ``${ENV}`` resolved and floats as exact decimals."""
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v, (*path, str(k)), env, report) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v, (*path, i), env, report) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _interpolate(str(node), env, lambda m: report(path, m))
    if isinstance(node, float):
        # repr() is the shortest text that reads back as the same float: what the operator wrote.
        return Decimal(repr(float(node)))
    return node


def _interpolate(text: str, env: Mapping[str, str], report: Any) -> str:
    """``${VAR}``, ``${VAR:-default}`` and ``$$`` for a literal dollar, as in compose files."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        var, default = match.group(1), match.group(2)
        value = env.get(var)
        if value is None or (value == "" and default is not None):
            if default is None:
                report(f"environment variable {var} is not set")
                return ""
            return default
        return value

    return _ENV_REF.sub(sub, text)


def _literal_secrets(tree: CommentedMap) -> Iterator[KeyPath]:
    """Secrets written in the file rather than referenced as ``${ENV_VAR}``: the keys, extra
    headers named like credentials, credentials in a base URL (`gateway.policy.secrets`)."""
    for pattern in _SECRET_PATHS:
        for path, value in _walk(tree, pattern, ()):
            if isinstance(value, str) and "${" not in value:
                yield path
    for path, value in _walk(tree, ("models", "*", "headers", "*"), ()):
        if isinstance(value, str) and "${" not in value and secret_name(str(path[-1])):
            yield path
    for path, value in _walk(tree, ("models", "*", "base_url"), ()):
        if isinstance(value, str) and any("${" not in c for c in url_credentials(value)):
            yield path


def _walk(node: Any, pattern: tuple[str, ...], path: KeyPath) -> Iterator[tuple[KeyPath, Any]]:
    if not pattern:
        yield path, node
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, CommentedMap):
        keys = list(node.keys()) if head == "*" else [head] if head in node else []
        for k in keys:
            yield from _walk(node[k], rest, (*path, str(k)))
    elif isinstance(node, CommentedSeq) and head == "*":
        for i, v in enumerate(node):
            yield from _walk(v, rest, (*path, i))


def _at(file: str, tree: CommentedMap, path: KeyPath, message: str) -> Problem:
    """Attach the line and column of the deepest part of ``path`` that exists in the file."""
    line, col = 0, 0
    node: Any = tree
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line, col = node.lc.key(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line, col = node.lc.item(part)
            node = node[part]
        else:
            break
    return Problem(file, line + 1, col + 1, path, message)
