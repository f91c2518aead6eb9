"""Server-sent events from a model server, read as the ``data`` payloads that have arrived.

A stream is read a buffer at a time, not a line at a time: whatever has arrived (up to
`BATCH_BYTES`) is split into lines at once and its ``data:`` payloads handed on together, so a
model server that sends faster than the gateway reads costs one await per read rather than one
per line.
"""

from __future__ import annotations

from gateway.providers import AttemptFailed

BATCH_BYTES = 64 * 1024
"""The most read at once: all that has arrived, up to this. A model's chunks are a few hundred
bytes each, so a burst passes on in batches of up to about two hundred. Each batch costs a pass
through the gateway's layers and a write to the client (16 KiB cost 18-30 % more CPU per
request at 200 and 1,000 chunks in bench/stream), while a burst's first chunk waits for its
batch to be read (a millisecond or two here)."""
MAX_LINE_BYTES = 512 * 1024
"""The longest line taken, as aiohttp's own line reader allowed: a longer one ends the stream
as a protocol failure instead of growing the buffer without bound."""


class DataLines:
    """Splits received bytes into the payloads of SSE ``data:`` lines, up to ``data: [DONE]``.

    Comments, event names and blank separators are skipped; a line may end in CRLF. A line
    split across two reads waits for its end.
    """

    __slots__ = ("_partial", "done")

    def __init__(self) -> None:
        self._partial = b""
        self.done = False
        """``data: [DONE]`` has been read; nothing after it is taken."""

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads of the lines that ``data`` completes, in order.

        Raises `AttemptFailed` once an unfinished line has grown past `MAX_LINE_BYTES` (the
        payloads before it have been handed on by then).
        """
        if len(self._partial) > MAX_LINE_BYTES:
            raise AttemptFailed("protocol", f"the upstream sent a line over {MAX_LINE_BYTES} bytes")
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        payloads = []
        for line in data[:end].split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    break
                payloads.append(payload)
        return payloads
