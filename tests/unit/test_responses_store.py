"""The embedded store of Responses: read at once, written to its SQLite file behind the
response, per tenant, bounded, and kept across a close and reopen."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.responses_store import SQLiteResponses


async def _written(store: SQLiteResponses) -> None:
    """Until the writer has put everything held into the file."""
    if store._writer is not None:
        await asyncio.wait_for(store._writer, 5)
    assert not store._held


def _rows(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT tenant, id FROM responses").fetchall())
    finally:
        conn.close()


async def test_a_put_is_read_at_once_then_found_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "responses.sqlite3"
    store = SQLiteResponses(path, 100)
    await store.put("team-a", "resp_1", b"one", 60)
    assert await store.get("team-a", "resp_1") == b"one"  # held, before any write
    assert await store.get("team-b", "resp_1") is None  # another tenant's: not found
    await _written(store)
    assert _rows(path) == [("team-a", "resp_1")]
    assert await store.get("team-a", "resp_1") == b"one"  # now from the file
    await store.aclose()
    again = SQLiteResponses(path, 100)
    assert await again.get("team-a", "resp_1") == b"one"
    assert await again.get("team-b", "resp_1") is None
    await again.aclose()


async def test_closing_writes_what_is_held_and_delete_removes_it_held_or_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "responses.sqlite3"
    store = SQLiteResponses(path, 100)
    for i in range(5):
        await store.put("t", f"resp_{i}", b"x", 60)
    assert await store.delete("t", "resp_0") is True  # perhaps still held
    await _written(store)
    assert await store.delete("t", "resp_1") is True  # written
    assert await store.delete("t", "resp_1") is False
    assert await store.delete("other", "resp_2") is False
    await store.put("t", "resp_9", b"x", 60)
    await store.aclose()  # resp_9 is written on the way out
    assert _rows(path) == [("t", f"resp_{i}") for i in (2, 3, 4, 9)]


async def test_the_oldest_go_past_max_entries_and_expired_ones_are_not_found(
    tmp_path: Path,
) -> None:
    path = tmp_path / "responses.sqlite3"
    store = SQLiteResponses(path, 3)
    for i in range(5):
        await store.put("t", f"resp_{i}", b"x", 60)
        await _written(store)
    assert _rows(path) == [("t", f"resp_{i}") for i in (2, 3, 4)]
    await store.put("t", "resp_short", b"x", 0.05)
    await asyncio.sleep(0.1)
    assert await store.get("t", "resp_short") is None
    await _written(store)
    assert await store.get("t", "resp_short") is None
    assert await store.delete("t", "resp_short") is False
    await store.aclose()
    reopened = SQLiteResponses(path, 3)
    await reopened.put("t", "resp_5", b"x", 60)  # the expired row goes as a new one comes
    await _written(reopened)
    assert _rows(path) == [("t", f"resp_{i}") for i in (3, 4, 5)]
    await reopened.aclose()


async def test_a_file_that_cannot_be_written_keeps_the_put_held_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data dir should be")
    store = SQLiteResponses(blocker / "responses.sqlite3", 100)
    await store.put("t", "resp_1", b"kept", 60)
    await asyncio.sleep(0.1)
    assert await store.get("t", "resp_1") == b"kept"  # still read from memory
    assert "responses store" in caplog.text
    blocker.unlink()
    await _written(store)  # the retry a second later finds a data dir it can make
    assert _rows(blocker / "responses.sqlite3") == [("t", "resp_1")]
    await store.aclose()
