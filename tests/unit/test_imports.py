"""The import rules that keep the code's shape: layers point one way and nothing is circular.

Read from the source with ``ast``, so an import inside a function or under ``TYPE_CHECKING``
counts as much as one at the top: hiding an import there does not make a cycle go away.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "local_engine")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """The project modules ``module`` imports (``from pkg import sub`` names the submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else base for t in targets]
        else:
            continue
        yield from (t for t in targets if t in MODULES and t != module)


GRAPH = {module: set(_imported(module, path)) for module, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _offenders(importers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{source} imports {target}"
        for source, targets in GRAPH.items()
        if _within(source, *importers)
        for target in targets
        if _within(target, *forbidden)
    )


def test_there_are_modules_to_check() -> None:
    assert "gateway.pipeline.run" in GRAPH and "gateway.policy.schema" in GRAPH
    assert GRAPH["gateway.pipeline.run"], "the graph reads no imports at all"


def test_no_import_cycles() -> None:
    cycles = sorted(
        f"{module} -> ... -> {module}" for module in GRAPH if module in _reachable(module)
    )
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    ("importers", "forbidden", "why"),
    [
        (
            ("gateway.policy",),
            (
                "gateway.pipeline",
                "gateway.api",
                "gateway.runtime",
                "gateway.providers",
                "gateway.ledger",
                "gateway.semantic",
                "gateway.ml",
                "gateway.telemetry",
                "gateway.app",
            ),
            "the policy is pure: schema, load, validate",
        ),
        (
            ("gateway.providers",),
            ("gateway.pipeline", "gateway.api", "gateway.runtime", "gateway.app"),
            "a provider is an adapter facing the model; the pipeline calls it, not the reverse",
        ),
        (
            ("gateway.pipeline",),
            ("gateway.api", "gateway.app", "gateway.cli"),
            "the pipeline never knows which front door a request came through",
        ),
        (
            ("gateway.ml", "gateway.semantic", "gateway.ledger", "gateway.runtime"),
            ("gateway.pipeline", "gateway.api", "gateway.app"),
            "the parts the pipeline uses do not reach back into it",
        ),
        (
            ("gateway.wire",),
            (
                "gateway.pipeline",
                "gateway.api",
                "gateway.app",
                "gateway.runtime",
                "gateway.providers",
            ),
            "a wire format is pure translation: it knows no door, stage or provider",
        ),
    ],
)
def test_layers_point_one_way(
    importers: tuple[str, ...], forbidden: tuple[str, ...], why: str
) -> None:
    assert not _offenders(importers, forbidden), why


def test_serving_never_imports_training_code() -> None:
    served = _reachable("gateway.app") | {"gateway.app"}
    assert not sorted(m for m in served if _within(m, "gateway.training"))
    assert "gateway.pipeline.run" in served


def test_a_planted_cycle_would_be_found() -> None:
    GRAPH["gateway.policy.schema"].add("gateway.pipeline.run")
    try:
        assert "gateway.policy.schema" in _reachable("gateway.policy.schema")
        assert _offenders(("gateway.policy",), ("gateway.pipeline",))
    finally:
        GRAPH["gateway.policy.schema"].discard("gateway.pipeline.run")
