"""From generated token ids to the text a client sees: incremental decoding and stop sequences.

Both streaming and non-streaming answers are built from the same deltas, so a stream's chunks
always concatenate to the non-streamed text.

`IncrementalDecoder` decodes only a short window of recent tokens per step (the offsets scheme
of vLLM's ``detokenize_incrementally``) and holds back text that ends in an incomplete UTF-8
sequence (U+FFFD) until the next token completes it. `StopMatcher` holds back any tail that could
be the start of a stop sequence, and cuts the text before the first stop sequence found; the
stop text itself is never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDecoder:
    def __init__(self, tokenizer: Decoder) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window re-decoded for context
        self._read_offset = 0  # tokens before this are already turned into text

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, all_ids: Sequence[int], final: bool = False) -> str:
        """Text added by the tokens beyond those seen before (``all_ids`` is cumulative)."""
        self._ids = list(all_ids)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return new_text[len(prefix_text) :]
        return ""


class StopMatcher:
    """Accumulates text; `feed` returns what is safe to send and whether a stop was hit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._text = ""
        self._sent = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything sent so far."""
        return self._text[: self._sent]

    def feed(self, delta: str) -> str:
        if self.stopped or not delta:
            return ""
        self._text += delta
        if not self._stops:
            return self._release(len(self._text))
        first = -1
        for stop in self._stops:
            pos = self._text.find(stop, max(0, self._sent - len(stop) + 1))
            if pos != -1 and (first == -1 or pos < first):
                first = pos
        if first != -1:
            self.stopped = True
            self._text = self._text[:first]
            return self._release(first)
        return self._release(len(self._text) - self._held_back())

    def flush(self) -> str:
        """At the end of generation: send whatever was held back."""
        return "" if self.stopped else self._release(len(self._text))

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop sequence."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _release(self, end: int) -> str:
        end = max(end, self._sent)
        out = self._text[self._sent : end]
        self._sent = end
        return out
