"""The spool: whole lines, fsync'd; a crash's partial line is skipped and cut off."""

from __future__ import annotations

from pathlib import Path

from gateway.ledger.spool import Spool
from tests.unit.ledger.helpers import rec


def test_append_claim_read_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.count() == 0
    first, second = [rec(), rec()], [rec()]
    spool.append(first)
    spool.append(second)
    assert spool.count() == 3
    claimed = spool.claim()
    assert len(claimed) == 1
    assert [r.request_id for r in spool.read(claimed[0])] == [r.request_id for r in first + second]
    spool.append([rec()])  # after a claim, appends go to a new file
    assert spool.read(claimed[0])[-1].request_id == second[0].request_id
    spool.remove(claimed[0], 3)
    assert spool.count() == 1
    assert len(spool.claim()) == 1


def test_a_partial_last_line_is_skipped_then_cut_before_the_next_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    kept = rec()
    spool.append([kept])
    current = tmp_path / "spool" / "current.jsonl"
    with current.open("ab") as f:
        f.write(b'{"time": 1.0, "request_id": "half-writ')  # a crash mid-write
    assert [r.request_id for r in Spool(tmp_path / "spool").read(current)] == [kept.request_id]
    assert Spool(tmp_path / "spool").count() == 1
    later = rec()
    spool.append([later])
    assert current.read_bytes().count(b"\n") == 2
    assert [r.request_id for r in spool.read(current)] == [kept.request_id, later.request_id]


def test_an_unreadable_line_is_skipped(tmp_path: Path, caplog: object) -> None:
    spool = Spool(tmp_path / "spool")
    good = rec()
    spool.append([good])
    current = tmp_path / "spool" / "current.jsonl"
    with current.open("ab") as f:
        f.write(b"not json\n")
    spool.append([rec()])
    assert len(spool.read(current)) == 2
