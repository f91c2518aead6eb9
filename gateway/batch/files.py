"""The bytes of uploaded and produced files, on disk under ``<data dir>/batch/files``.

An upload (``POST /v1/files``, multipart/form-data as the SDKs send it) streams to a temporary
file, counted as it comes and refused as soon as it passes the policy's limit, and is renamed
into place once whole: a file id never names half a file. The multipart framing is read by
python-multipart's streaming parser, so a large file is never held in memory.

Ids are random and their objects are looked up under the tenant (`gateway.batch.store`), so
the path needs no tenant: a file is reached only through its tenant's object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD_LIMIT = 1024
"""Bytes of a form field other than the file (``purpose``)."""
FRAMING_LIMIT = 64 * 1024
"""Bytes of a body beyond its file: the other fields and the multipart framing."""


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.jsonl"

    async def read(self, file_id: str) -> bytes:
        return await asyncio.to_thread(self.path(file_id).read_bytes)

    async def write(self, file_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_sync, file_id, data)

    async def remove(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, True)

    def _write_sync(self, file_id: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f".{file_id}.part"
        part.write_bytes(data)
        os.replace(part, self.path(file_id))

    async def receive(
        self, file_id: str, content_type: str, body: AsyncIterator[bytes], limit: int
    ) -> Upload:
        """Store the ``file`` field of a multipart body as ``file_id``; the other fields are
        returned. Raises `BadRequest` or `PayloadTooLarge` (nothing is kept then)."""
        media, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if media != b"multipart/form-data" or not boundary:
            raise BadRequest(
                "Upload the file as multipart/form-data with the fields 'file' and 'purpose'.",
                param="file",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f".{file_id}.part"
        upload = Upload(limit)
        try:
            with part.open("wb") as sink:
                upload.sink = sink
                parser = MultipartParser(boundary, upload.callbacks())
                total = 0
                async for chunk in body:
                    total += len(chunk)
                    if total > limit + FRAMING_LIMIT:
                        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.")
                    parser.write(chunk)
                parser.finalize()
            upload.check()
            os.replace(part, self.path(file_id))
        except MultipartParseError as exc:
            raise BadRequest(f"The multipart body is malformed: {exc}", param="file") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        return upload


@dataclass
class Upload:
    """What a multipart body held: the file's name and size, and the small fields."""

    limit: int
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    sink: IO[bytes] | None = None
    _header: bytes = b""
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _name: str | None = None
    _value: bytearray = field(default_factory=bytearray)
    _is_file: bool = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._header_value,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def check(self) -> None:
        if self.filename is None:
            raise BadRequest("The form has no 'file' field.", param="file")

    def _begin(self) -> None:
        self._headers, self._header, self._value = {}, b"", bytearray()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        name = self._header.lower()
        self._headers[name] = self._headers.get(name, b"") + data[start:end]
        self._header = b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            if self.filename is not None:
                raise BadRequest("The form has two 'file' fields.", param="file")
            self.filename = options.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.size += end - start
            if self.size > self.limit:
                raise PayloadTooLarge(f"The file is over the limit of {self.limit} bytes.")
            assert self.sink is not None
            self.sink.write(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > FIELD_LIMIT:
            raise BadRequest(f"The form field {self._name!r} is too long.", param=self._name)

    def _end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")
