"""The checks the pre-commit hooks run, so that CI enforces them too: ruff, ruff format and
mypy --strict over the packages (the settings are pyproject.toml's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "gateway", "local_engine", "tests", "bench"],
        ["ruff", "format", "--check", "gateway", "local_engine", "tests", "bench"],
        ["mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_static_check_passes(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_packages_ship_their_type_information() -> None:
    for package in ("gateway", "local_engine"):
        assert (ROOT / package / "py.typed").is_file()
