"""``local-engine serve`` refuses to start, with one clear line, when the model cannot load."""

from __future__ import annotations

import subprocess
import sys

import pytest


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local_engine", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/model"], "no such model file or directory"),
        (["--model", "./missing.gguf"], "no such model file or directory"),
        (["--backend", "vllm", "--device", "cpu"], "--backend vllm"),
    ],
)
def test_a_model_that_cannot_load_stops_start_up(args: list[str], message: str) -> None:
    result = serve(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("local-engine: error:") and message in lines[-1]


def test_help_lists_the_flags() -> None:
    result = serve("--help")
    assert result.returncode == 0
    for flag in (
        "--model",
        "--device",
        "--dtype",
        "--host",
        "--port",
        "--max-batch-tokens",
        "--max-queue",
        "--backend",
    ):
        assert flag in result.stdout
