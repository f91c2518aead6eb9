"""Without the ``train`` extra, the training commands say how to install it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.training.cache.cli import app as cache_app
from gateway.training.router.cli import router_app


@pytest.fixture
def no_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "sklearn", None)
    for name in ("gateway.training.router.train", "gateway.training.cache.train_guard"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        parent, _, child = name.rpartition(".")
        monkeypatch.delattr(sys.modules[parent], child, raising=False)


@pytest.mark.usefixtures("no_sklearn")
def test_router_train_names_the_extra(tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("")
    result = CliRunner().invoke(router_app, ["train", "--data", str(data)])
    assert result.exit_code == 1
    assert "pip install 'llm-gateway[train]'" in result.output


@pytest.mark.usefixtures("no_sklearn")
def test_cache_train_guard_names_the_extra(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("")
    args = ["train-guard", "--pairs", str(pairs), "--out", str(tmp_path / "v.npz")]
    result = CliRunner().invoke(cache_app, args)
    assert result.exit_code == 1
    assert "pip install 'llm-gateway[train]'" in result.output
