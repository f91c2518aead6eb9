"""The byte format of a semantic-cache entry in Redis, and its validation.

``MAGIC (4 bytes) | blake2b-64 of the body (8 bytes) | body`` where the body is a msgpack array
(vector bytes, tenant, fingerprint, text, payload, created). A blob that fails any check (magic,
checksum, schema, vector length, non-finite vector) raises :class:`CorruptEntry`; the caller
deletes it and treats it as a miss, so a damaged entry can never be served.
"""

from __future__ import annotations

import hashlib
import math

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = ["MAGIC", "CorruptEntry", "Record", "decode", "encode"]

MAGIC = b"SEM1"
_DIGEST = 8


class CorruptEntry(ValueError):
    """A stored blob that cannot be decoded into a valid entry."""


class Record(msgspec.Struct, array_like=True, frozen=True):
    """One entry as stored: the vector as little-endian float32 bytes."""

    vector: bytes
    tenant: str
    fingerprint: str
    text: str
    payload: bytes
    created: float


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST).digest()


def encode(record: Record) -> bytes:
    body = _encoder.encode(record)
    return MAGIC + _digest(body) + body


def decode(blob: bytes, dim: int) -> tuple[Record, npt.NDArray[np.float32]]:
    """The record and its vector; raises :class:`CorruptEntry` on anything unexpected."""
    if not isinstance(blob, bytes | bytearray) or len(blob) < len(MAGIC) + _DIGEST:
        raise CorruptEntry("too short")
    blob = bytes(blob)
    if not blob.startswith(MAGIC):
        raise CorruptEntry("bad magic")
    digest, body = blob[len(MAGIC) : len(MAGIC) + _DIGEST], blob[len(MAGIC) + _DIGEST :]
    if _digest(body) != digest:
        raise CorruptEntry("checksum mismatch")
    try:
        record = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptEntry(f"undecodable: {exc}") from None
    if len(record.vector) != 4 * dim:
        raise CorruptEntry(f"vector of {len(record.vector)} bytes, expected {4 * dim}")
    vector = np.frombuffer(record.vector, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vector)) or not math.isfinite(record.created):
        raise CorruptEntry("non-finite values")
    return record, vector
