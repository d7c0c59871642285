"""Unsigned LEB128 varints, as multiformats and protobuf use them."""

from __future__ import annotations

__all__ = ["decode_varint", "encode_varint", "read_varint"]

from typing import BinaryIO

#: Multiformats caps varints at 9 bytes (63 bits); protobuf allows 10.
_MAX_BYTES = 10


def encode_varint(n: int) -> bytes:
    """Encode a non-negative integer."""
    if n < 0:
        raise ValueError(f"varint cannot encode negative {n}")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at ``buf[pos:]``; return ``(value, position after it)``.

    Raises ValueError on truncation, overlong or non-minimal encodings.
    """
    result = shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and pos - start > 1:
                raise ValueError("non-minimal varint")
            return result, pos
        shift += 7
        if pos - start >= _MAX_BYTES:
            raise ValueError("varint too long")


def read_varint(stream: BinaryIO) -> int | None:
    """Read one varint from a stream; None at a clean end of stream (before any byte)."""
    result = shift = 0
    n = 0
    while True:
        c = stream.read(1)
        if not c:
            if n == 0:
                return None
            raise ValueError("truncated varint")
        b = c[0]
        n += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and n > 1:
                raise ValueError("non-minimal varint")
            return result
        shift += 7
        if n >= _MAX_BYTES:
            raise ValueError("varint too long")
