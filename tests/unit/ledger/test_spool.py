"""The spool: whole lines, fsync'd, all or nothing; one replica's files each; the files of
replicas that are gone adopted by exactly one starting replica."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from gateway.ledger.record import encode
from gateway.ledger.spool import Spool, replica_name
from tests.unit.ledger.helpers import rec


def ids(spool: Spool) -> list[str]:
    return [r.request_id for path in spool.files() for r in spool.read(path)]


def test_append_claim_read_remove(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "r1")
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
    spool.release()


def test_a_partial_last_line_is_skipped_then_cut_before_the_next_append(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "r1")
    kept = rec()
    spool.append([kept])
    current = tmp_path / "spool" / "r1.jsonl"
    with current.open("ab") as f:
        f.write(b'{"time": 1.0, "request_id": "half-writ')  # a crash mid-write
    assert [r.request_id for r in spool.read(current)] == [kept.request_id]
    assert Spool(tmp_path / "spool", "r1").count() == 1
    later = rec()
    spool.append([later])
    assert current.read_bytes().count(b"\n") == 2
    assert [r.request_id for r in spool.read(current)] == [kept.request_id, later.request_id]
    spool.release()


def test_an_unreadable_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "r1")
    spool.append([rec()])
    current = tmp_path / "spool" / "r1.jsonl"
    with current.open("ab") as f:
        f.write(b"not json\n")
    spool.append([rec()])
    assert len(spool.read(current)) == 2
    spool.release()


# A process whose file size limit lets the spool's write start and then fail (EFBIG), as a
# full disk does: the spool must cut the half-written batch off again.
_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from gateway.ledger.spool import Spool
from tests.unit.ledger.helpers import rec
spool = Spool(Path(sys.argv[1]), "r1")
size = (Path(sys.argv[1]) / "r1.jsonl").stat().st_size
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, size + 1000))
try:
    spool.append([rec() for _ in range(100)])
except OSError as exc:
    print("failed", exc.errno)
"""


def test_a_failed_append_leaves_nothing_of_its_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "r1")
    before = [rec(), rec()]
    spool.append(before)
    spool.release()  # the child process takes the id
    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    assert child.stdout.startswith("failed"), child.stderr
    again = Spool(tmp_path / "spool", "r1")
    assert ids(again) == [r.request_id for r in before]
    assert (tmp_path / "spool" / "r1.jsonl").read_bytes() == b"".join(
        encode(r) + b"\n" for r in before
    )


def test_a_replica_id_in_use_gets_a_process_unique_one_and_its_own_files(tmp_path: Path) -> None:
    a, b = Spool(tmp_path, "host"), Spool(tmp_path, "host")
    a.acquire()
    b.acquire()
    assert a.replica == "host"
    assert b.replica == f"host-{os.getpid()}"
    mine, theirs = [rec()], [rec(), rec()]
    a.append(mine)
    b.append(theirs)
    assert a.acquire() == [] and Spool(tmp_path, "other").acquire() == []  # both are alive
    assert ids(a) == [r.request_id for r in mine]
    assert ids(b) == [r.request_id for r in theirs]
    assert all(a.replica in p.name for p in a.claim())
    a.release()
    b.release()


def test_replica_ids_are_made_safe_for_file_names() -> None:
    assert replica_name("pod-7.web.svc") == "pod-7.web.svc"
    assert replica_name("a/b+c*[d]") == "a_b_c__d_"
    assert replica_name("  ") == "replica"


_DIE_WITH_SPOOLS = """
import os, sys
from pathlib import Path
from gateway.ledger.spool import Spool
from tests.unit.ledger.helpers import rec
spools = [Spool(Path(sys.argv[1]), name) for name in sys.argv[2:]]
for spool in spools:  # all alive at once, so none adopts another
    spool.append([rec(request_id=f"{spool.replica}-{i}") for i in range(5)])
    spool.claim()
    spool.append([rec(request_id=f"{spool.replica}-late")])
os._exit(0)  # a crash: the locks are left behind, and the kernel drops them
"""


def test_the_spools_of_gone_replicas_are_adopted_once_by_starting_replicas(
    tmp_path: Path,
) -> None:
    alive = Spool(tmp_path, "alive")
    alive.append([rec(request_id="alive-0")])
    gone = [f"gone{i}" for i in range(12)]
    subprocess.run(
        [sys.executable, "-c", _DIE_WITH_SPOOLS, str(tmp_path), *gone],
        check=True,
        cwd=Path(__file__).parents[3],
    )
    assert (tmp_path / "gone0.lock").exists()
    # two replicas start at once: each dead replica's files go to exactly one of them
    starters = [Spool(tmp_path, f"new{i}") for i in range(2)]
    adopted: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def start(i: int) -> None:
        barrier.wait()
        adopted[i] = starters[i].acquire()

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(adopted[0] + adopted[1]) == sorted(gone)
    assert not set(adopted[0]) & set(adopted[1])
    found = ids(starters[0]) + ids(starters[1])
    expected = [f"{name}-{i}" for name in gone for i in [*range(5), "late"]]
    assert sorted(found) == sorted(expected)
    assert ids(alive) == ["alive-0"]  # a live replica's spool is never taken
    assert not list(tmp_path.glob("gone*"))  # their locks too are gone
    for spool in [alive, *starters]:
        spool.release()


def test_files_from_before_per_replica_spools_are_adopted(tmp_path: Path) -> None:
    old = [rec(), rec()]
    (tmp_path / "current.jsonl").write_bytes(encode(old[0]) + b"\n")
    (tmp_path / "claimed-1-2.jsonl").write_bytes(encode(old[1]) + b"\n")
    spool = Spool(tmp_path, "new")
    assert spool.acquire() == ["(legacy)"]
    assert sorted(ids(spool)) == sorted(r.request_id for r in old)
    spool.release()
