"""The spool: append-only files of records that could not be stored yet, replayed later.

A record reaches the spool when its store cannot take it (Redis down or too slow, or a store
failing at shutdown). Each append is whole lines of JSON, written and ``fsync``'d under an
exclusive ``flock``, so it survives a crash of the gateway or of the machine right after.

Replay never races an append: `claim` renames the current file to ``claimed-*.jsonl`` (under
the same lock) so later appends start a new file, and a claimed file is removed only after
every record in it was stored. A crash in between leaves the claimed file, which the next
replay sends again; stores are idempotent by ``request_id``, so a record is counted once.

A last line without its newline is what a crash in the middle of a write leaves: readers skip
it, and the next append cuts it off before writing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from gateway.ledger.record import LedgerRecord, decode, encode

log = logging.getLogger(__name__)

CURRENT = "current.jsonl"


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._current = directory / CURRENT
        self._count: int | None = None

    def count(self) -> int:
        """Records waiting in the spool (counted from the files once, then kept up to date)."""
        if self._count is None:
            self._count = sum(len(self.read(path)) for path in self._files())
        return self._count

    def append(self, records: Iterable[LedgerRecord]) -> None:
        """Write records as whole lines and fsync; blocking (call it in a thread)."""
        data = b"".join(encode(record) + b"\n" for record in records)
        if not data:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self._current, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, self._current):
                    continue  # claimed between our open and our lock: append to the new file
                _cut_partial_line(fd)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                break
            finally:
                os.close(fd)  # also releases the lock
        if self._count is not None:
            self._count += data.count(b"\n")

    def claim(self) -> list[Path]:
        """Move the current file aside for replay; every file to replay, oldest first."""
        if self._current.exists():
            fd = os.open(self._current, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, self._current):
                    os.rename(
                        self._current,
                        self.directory / f"claimed-{time.time_ns()}-{os.getpid()}.jsonl",
                    )
                    _fsync_dir(self.directory)
            finally:
                os.close(fd)
        return sorted(self.directory.glob("claimed-*.jsonl"))

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

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [*sorted(self.directory.glob("claimed-*.jsonl")), self._current]


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
