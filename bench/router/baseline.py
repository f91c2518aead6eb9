"""A module of the package as it was at a git revision, imported beside the current one, so that a
bench can fit the old way and the new way in one run (bench/router/fits.py,
bench/cache/guard_fits.py) without keeping the old code in the package."""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_at(revision: str, path: str) -> types.ModuleType:
    """``path`` (relative to the repository root) at ``revision``, as a module named after both."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    name = f"baseline_{Path(path).stem}_{revision}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


BASELINE = "42a5bcc"  # the last commit whose training fitted by hand (Newton, Adam loops)


def arguments(doc: str, option: str, default: Path) -> argparse.ArgumentParser:
    """A bench's arguments: its data file (``option``) and ``--baseline``, the revision to fit
    the old way."""
    out = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    out.add_argument(option, type=Path, default=default)
    out.add_argument("--baseline", default=BASELINE, help="git revision of the hand-written fit")
    return out
