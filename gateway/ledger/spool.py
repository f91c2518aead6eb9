"""The spool: one replica's append-only files of records its store could not take yet.

A record reaches the spool when its store fails or is too slow, when the in-memory queue passes
its bound, or at shutdown; the ledger replays the spool into the store when the store answers
again. Each append is whole lines of JSON, written and ``fsync``'d under an exclusive ``flock``,
so it survives a crash of the gateway or of the machine right after; an append that fails is cut
back off, so a record is never half in the spool.

Replicas share one data volume, so each replica has files of its own in the spool directory,
named by its replica id (sanitized to ``[A-Za-z0-9._-]``):

- ``{id}.lock``: ``flock``'d by the live replica for as long as its ledger runs. A lock that can
  be taken means its replica is gone (the kernel drops a dead process's locks).
- ``{id}.jsonl``: where the replica appends.
- ``{id}+claimed-{ns}[-{from}].jsonl``: files moved aside for replay, oldest first.

A replica replays and removes only its own files: its budget spend counts what it spooled until
the replay, so replaying another replica's records would leave that replica counting them twice.
If the id is held by a live process already (two processes on one host), the spool takes
``{id}-{pid}`` instead. At start, `Spool.acquire` also adopts the files of replicas that are
gone: holding the dead replica's lock (so two starting replicas never take the same files), it
renames them into claimed files of its own and removes the lock. Replay is idempotent by
``request_id``, so a record that reached the store before a crash is counted once.

Replay never races an append: `claim` renames the replica's current file (under its ``flock``),
so later appends start a new file, and a claimed file is removed only after every record in it
was stored. A crash in between leaves the claimed file, which the next replay sends again.

A last line without its newline is what a crash in the middle of a write leaves: readers skip
it, and the next append cuts it off before writing. Files from before per-replica spools
(``current.jsonl``, ``claimed-*.jsonl``) are adopted like a gone replica's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from gateway.ledger.record import LedgerRecord, decode, encode

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_LEGACY_CURRENT = "current.jsonl"
_LEGACY_CLAIMED = "claimed-*.jsonl"
_sequence = itertools.count()
"""Orders (and keeps apart) files claimed in the same nanosecond."""


def replica_name(raw: str) -> str:
    """A replica id made safe for file names (no ``+``, ``/`` or glob characters)."""
    return _UNSAFE.sub("_", raw.strip())[:100] or "replica"


class Spool:
    def __init__(self, directory: Path, replica: str) -> None:
        self.directory = directory
        self.replica = replica_name(replica)
        """This replica's id; `acquire` adds ``-{pid}`` when a live process holds it."""
        self._lock_fd: int | None = None
        self._count: int | None = None

    # -- this replica's identity ------------------------------------------------------------

    def acquire(self) -> list[str]:
        """Lock this replica's id, then adopt the spools of replicas that are gone.

        Returns the ids adopted. Blocking (call it in a thread); idempotent.
        """
        if self._lock_fd is not None:
            return []
        self.directory.mkdir(parents=True, exist_ok=True)
        wanted, attempt = self.replica, 0
        while self._lock_fd is None:
            fd = _try_lock(self.directory / f"{self.replica}.lock")
            if fd is not None:
                self._lock_fd = fd
                break
            attempt += 1  # a live process holds the id: take a process-unique one
            suffix = f"-{os.getpid()}" + (f"-{attempt}" if attempt > 1 else "")
            self.replica = f"{wanted}{suffix}"
        if self.replica != wanted:
            log.warning(
                "ledger spool: replica id %r is in use; this process is %r", wanted, self.replica
            )
        adopted = [gone for gone in self._foreign_ids() if self._adopt(gone)]
        if self._adopt_legacy():
            adopted.append("(legacy)")
        self._count = None
        return adopted

    def release(self) -> None:
        """Give up this replica's id (at shutdown); files left are adopted as the next start's."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            (self.directory / f"{self.replica}.lock").unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    # -- this replica's files ---------------------------------------------------------------

    def count(self) -> int:
        """Records waiting in this replica's files (counted once, then kept up to date)."""
        if self._count is None:
            self._count = sum(len(self.read(path)) for path in self.files())
        return self._count

    def pending(self) -> Iterator[list[LedgerRecord]]:
        """The records of each of this replica's files (counting them anew)."""
        total = 0
        for path in self.files():
            records = self.read(path)
            total += len(records)
            yield records
        self._count = total

    def files(self) -> list[Path]:
        """This replica's files, claimed ones (oldest first), then the current one."""
        return [*self._claimed(), self._current]

    def append(self, records: Iterable[LedgerRecord]) -> None:
        """Write records as whole lines and fsync, all or nothing; blocking (call it in a
        thread). Raises `OSError` when the disk fails, with nothing of the batch left behind."""
        data = b"".join(encode(record) + b"\n" for record in records)
        if not data:
            return
        self.acquire()
        while True:
            fd = os.open(self._current, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, self._current):
                    continue  # claimed between our open and our lock: append to the new file
                _cut_partial_line(fd)
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
                break
            finally:
                os.close(fd)  # also releases the lock
        if self._count is not None:
            self._count += data.count(b"\n")

    def claim(self) -> list[Path]:
        """Move the current file aside for replay; this replica's files to replay, oldest
        first."""
        self.acquire()
        if _claim(self._current, self._claimed_path()):
            _fsync_dir(self.directory)
        return self._claimed()

    def read(self, path: Path) -> list[LedgerRecord]:
        """The records of a file; a partial last line and undecodable lines are skipped."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")
        lines.pop()  # "" after the last newline, or a line cut short by a crash
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(decode(line))
            except msgspec.DecodeError as exc:
                log.error("ledger spool %s:%d: skipped an unreadable record: %s", path, number, exc)
        return records

    def remove(self, path: Path, replayed: int) -> None:
        path.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        if self._count is not None:
            self._count = max(0, self._count - replayed)

    # -- internals --------------------------------------------------------------------------

    @property
    def _current(self) -> Path:
        return self.directory / f"{self.replica}.jsonl"

    def _claimed(self, replica: str | None = None) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"{replica or self.replica}+claimed-*.jsonl"))

    def _claimed_path(self, origin: str = "") -> Path:
        tail = f"-{origin}" if origin else ""
        stamp = f"{time.time_ns():020d}-{next(_sequence):08d}"
        return self.directory / f"{self.replica}+claimed-{stamp}{tail}.jsonl"

    def _foreign_ids(self) -> set[str]:
        ids = set()
        for path in self.directory.iterdir():
            name = path.name
            if name.endswith(".lock"):
                ids.add(name.removesuffix(".lock"))
            elif "+claimed-" in name:
                ids.add(name.partition("+claimed-")[0])
            elif name.endswith(".jsonl") and name != _LEGACY_CURRENT and "+" not in name:
                ids.add(name.removesuffix(".jsonl"))
        ids.discard(self.replica)
        return {i for i in ids if i and not i.startswith("claimed-") and replica_name(i) == i}

    def _adopt(self, gone: str) -> bool:
        """Take over the files of replica ``gone`` if it is not running; True when it was not."""
        lock = self.directory / f"{gone}.lock"
        fd = _try_lock(lock)
        if fd is None:
            return False  # alive, or being adopted by another replica right now
        try:
            moved = _claim(self.directory / f"{gone}.jsonl", self._claimed_path(gone))
            for path in self._claimed(gone):
                path.rename(self._claimed_path(gone))
                moved = True
            lock.unlink(missing_ok=True)
            _fsync_dir(self.directory)
        finally:
            os.close(fd)
        if moved:
            log.warning("ledger spool: adopted the spool of replica %r, which is gone", gone)
        return moved

    def _adopt_legacy(self) -> bool:
        moved = _claim(self.directory / _LEGACY_CURRENT, self._claimed_path("legacy"))
        for path in sorted(self.directory.glob(_LEGACY_CLAIMED)):
            path.rename(self._claimed_path("legacy"))
            moved = True
        if moved:
            _fsync_dir(self.directory)
        return moved


def _try_lock(path: Path) -> int | None:
    """An fd holding ``flock(path)``, or None when another open file holds it. A lock file
    removed (by an adopter) between our open and our lock is opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _claim(current: Path, to: Path) -> bool:
    """Rename ``current`` to ``to`` under its flock (appenders hold it); False if absent."""
    try:
        fd = os.open(current, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _same_file(fd, current):
            return False
        os.rename(current, to)
        return True
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _cut_partial_line(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    chunk = 4096
    end = size
    while end > 0:
        start = max(0, end - chunk)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            os.ftruncate(fd, start + at + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
