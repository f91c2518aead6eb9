"""The train/validation split: deterministic, stratified, disjoint."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from gateway.training.router.data import LabelledRow, load_labelled, split


def _rows() -> list[LabelledRow]:
    rows = []
    for subset, n in (("algebra", 40), ("law", 100), ("gsm8k", 60)):
        bench = "gsm8k" if subset == "gsm8k" else "mmlu"
        rows += [
            LabelledRow(f"{bench}/{subset}/{i}", bench, subset, f"q{i}", 0, 1) for i in range(n)
        ]
    return rows


def test_split_is_deterministic_and_ignores_row_order() -> None:
    rows = _rows()
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    first = {r.id for r in split(rows)[1]}
    assert first == {r.id for r in split(shuffled)[1]}
    assert first == {r.id for r in split(rows)[1]}


def test_split_is_stratified_and_disjoint() -> None:
    rows = _rows()
    train, validation = split(rows, 0.25)
    assert Counter(r.subset for r in validation) == {"algebra": 10, "law": 25, "gsm8k": 15}
    assert not {r.id for r in train} & {r.id for r in validation}
    assert len(train) + len(validation) == len(rows)


def test_a_new_row_does_not_move_the_others() -> None:
    rows = _rows()
    before = {r.id for r in split(rows)[1]}
    after = {r.id for r in split([*rows, LabelledRow("mmlu/law/x", "mmlu", "law", "q", 0, 0)])[1]}
    assert len(before ^ after) <= 2


def test_load_drops_contaminated_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    base = {"benchmark": "mmlu", "subset": "law", "prompt": "p", "weak_score": 0}
    rows = [
        {**base, "id": "a", "strong_score": 1, "contaminated": False},
        {**base, "id": "b", "strong_score": 1, "contaminated": True},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_labelled(path)
    assert [r.id for r in loaded] == ["a"]
    assert loaded[0].needs_strong
    assert len(load_labelled(path, drop_contaminated=False)) == 2


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    row = {"id": 1, "prompt": "p", "weak_score": 0, "strong_score": 1}
    path.write_text(json.dumps(row) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:2"):
        load_labelled(path)


def test_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "prompt": "p"}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:1: .*weak_score"):
        load_labelled(path)
