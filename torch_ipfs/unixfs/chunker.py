"""Chunkers: split a byte stream into the leaves of a UnixFS file.

Chunkers are named by spec strings, as in Kubo (``--chunker=size-262144``), and looked
up in a small registry (:data:`CHUNKERS`). Each chunker reads its stream piece by piece,
so importing a file of any size holds one chunk at a time.

Like Go's ``io.ReadFull``-based splitter, a fixed-size chunker returns full chunks
except the last, never an empty chunk, and nothing at all for an empty stream: chunk
boundaries must not depend on how the operating system happens to split reads
(pipes and sockets return short reads).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = [
    "CHUNKERS",
    "DEFAULT_CHUNKER",
    "MAX_CHUNK_SIZE",
    "Chunker",
    "FixedSizeChunker",
    "get_chunker",
]

#: Kubo's default (``size-262144``, 256 KiB).
DEFAULT_CHUNKER = "size-262144"

#: Kubo refuses chunks over 1 MiB (boxo ``chunk.ChunkSizeLimit``); so do we, which also
#: keeps every leaf block well under the 2 MiB block cap.
MAX_CHUNK_SIZE = 1024 * 1024


class Chunker(abc.ABC):
    """Splits a binary stream into chunks (the file's leaves, in order)."""

    #: The spec string this chunker was made from (``"size-262144"``).
    spec: str

    @abc.abstractmethod
    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield the chunks of ``stream``, reading it incrementally. No empty chunks."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


class FixedSizeChunker(Chunker):
    """Chunks of exactly ``size`` bytes, the last one shorter (``size-N``)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"chunk size must be positive, got {size}")
        if size > MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {size} is over the {MAX_CHUNK_SIZE}-byte maximum (as in Kubo)")
        self.size = size
        self.spec = f"size-{size}"

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        size = self.size
        read = stream.read
        while True:
            chunk = read(size)
            if not chunk:
                return
            if len(chunk) < size:
                chunk = _read_rest(read, chunk, size)
            yield chunk
            if len(chunk) < size:
                return  # a short chunk is only possible at end of stream


def _read_rest(read: Callable[[int], bytes | None], first: bytes, size: int) -> bytes:
    """Complete a short read (``io.ReadFull``): keep reading until ``size`` bytes or EOF."""
    parts = [first]
    have = len(first)
    while have < size:
        more = read(size - have)
        if more is None:  # non-blocking stream with nothing ready: not supported
            raise ValueError("the importer needs a blocking stream (read() returned None)")
        if not more:
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts)


def _parse_size(spec: str, arg: str) -> Chunker:
    try:
        size = int(arg, 10)
    except ValueError:
        raise ValueError(f"bad chunker {spec!r}: 'size-N' needs a decimal byte count") from None
    return FixedSizeChunker(size)


#: Chunker families by spec prefix: ``"<name>-<arguments>"``.
CHUNKERS: dict[str, Callable[[str, str], Chunker]] = {
    "size": _parse_size,
}


def get_chunker(spec: str | Chunker = DEFAULT_CHUNKER) -> Chunker:
    """The chunker for a spec string such as ``"size-262144"`` (or a ready :class:`Chunker`)."""
    if isinstance(spec, Chunker):
        return spec
    if spec in ("default", "", "size"):  # Kubo reads a bare "size" as the default size
        spec = DEFAULT_CHUNKER
    name, _, arg = spec.partition("-")
    try:
        factory = CHUNKERS[name]
    except KeyError:
        valid = ", ".join(f"'{n}-N'" for n in sorted(CHUNKERS))
        raise ValueError(f"unknown chunker {spec!r}; valid: {valid}") from None
    return factory(spec, arg)
