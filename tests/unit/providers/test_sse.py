"""Reading a model server's SSE a buffer at a time: the ``data`` payloads, whatever the reads."""

from __future__ import annotations

import pytest

from gateway.providers import AttemptFailed
from gateway.providers.sse import MAX_LINE_BYTES, DataLines

STREAM = (
    b': keep-alive\n\nevent: x\ndata: {"a":1}\n\n'
    b'data:{"b":2}\r\n\r\ndata: [DONE]\n\ndata: {"c":3}\n\n'
)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_the_payloads_are_the_same_however_the_bytes_arrive(size: int) -> None:
    lines, payloads = DataLines(), []
    for start in range(0, len(STREAM), size):
        if not lines.done:
            payloads += lines.feed(STREAM[start : start + size])
    assert payloads == [b'{"a":1}', b'{"b":2}']  # comments and names skipped, CRLF taken
    assert lines.done  # and nothing after [DONE]


def test_a_line_waits_for_its_end() -> None:
    lines = DataLines()
    assert lines.feed(b'data: {"a"') == []
    assert lines.feed(b":1}\n\ndata: [DO") == [b'{"a":1}']
    assert not lines.done
    assert lines.feed(b"NE]\n\n") == []
    assert lines.done


def test_an_overlong_line_fails_after_the_payloads_before_it() -> None:
    lines = DataLines()
    assert lines.feed(b"data: 1\n\ndata: " + b"x" * MAX_LINE_BYTES + b"x") == [b"1"]
    with pytest.raises(AttemptFailed) as failed:
        lines.feed(b"x")
    assert failed.value.kind == "protocol"
    assert "xxx" not in failed.value.message  # the upstream's data is not quoted
