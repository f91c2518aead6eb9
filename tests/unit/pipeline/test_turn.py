"""A stream's chunks (`Chunks`): one at a time for a door that translates each, or in the
batches in which they arrived for a door that passes them on."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from gateway.pipeline.turn import Chunks, batches


class Source:
    """Batches of chunks that notes when it was closed."""

    def __init__(self, *batches: list[bytes]) -> None:
        self.batches = batches
        self.closed = False

    async def stream(self) -> AsyncGenerator[list[bytes], None]:
        try:
            for batch in self.batches:
                yield batch
        finally:
            self.closed = True


async def test_chunks_come_one_at_a_time_across_batches() -> None:
    source = Source([b"a", b"b"], [b"c"])
    assert [chunk async for chunk in Chunks(source.stream())] == [b"a", b"b", b"c"]
    assert source.closed


async def test_batches_resume_after_the_chunks_taken_one_at_a_time() -> None:
    source = Source([b"a", b"b", b"c"], [b"d"])
    chunks = Chunks(source.stream())
    assert await anext(chunks) == b"a"
    assert [batch async for batch in batches(chunks)] == [[b"b", b"c"], [b"d"]]
    assert source.closed


async def test_closing_the_chunks_closes_the_stream() -> None:
    source = Source([b"a", b"b"], [b"c"])
    chunks = Chunks(source.stream())
    assert await anext(chunks) == b"a"
    await chunks.aclose()
    assert source.closed


async def test_other_chunks_come_in_batches_of_one() -> None:
    async def plain() -> AsyncGenerator[bytes, None]:
        yield b"a"
        yield b"b"

    assert [batch async for batch in batches(plain())] == [[b"a"], [b"b"]]


async def test_known_chunks_are_whole_and_one_batch() -> None:
    chunks = Chunks.known([b"a", b"b"])
    assert chunks.whole == [b"a", b"b"]
    assert [batch async for batch in batches(chunks)] == [[b"a", b"b"]]
