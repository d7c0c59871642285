"""CAR files: content-addressed archives of blocks (CARv1 read/write, CARv2 read).

Layout (https://ipld.io/specs/transport/car/)::

    CARv1  varint(len(header)) dag-cbor{"roots": [CID, ...], "version": 1}
           then sections: varint(len(cid) + len(block)) cid block
    CARv2  11-byte pragma 0a a1 67 "version" 02, a 40-byte header (16 bytes of
           characteristics, data offset, data size, index offset: u64 little-endian),
           the inner CARv1 at data offset, an optional index (ignored here)

Everything here streams: :class:`CarReader` needs only ``read(n)`` (or an iterator of
byte chunks, like an HTTP response body) and never seeks; each block is hashed against
its CID before it is yielded. For CARs from untrusted trustless gateways,
:mod:`torch_ipfs.carverify` goes further: each block must be the very one its own
depth-first walk of the requested DAG expects next.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from torch_ipfs.cid import CID, verify_block
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import BlockTooLargeError, CARFormatError, InvalidCIDError
from torch_ipfs.sources.base import MAX_BLOCK_SIZE
from torch_ipfs.varint import decode_varint, encode_varint

__all__ = ["CARV2_PRAGMA", "CarReader", "encode_header", "export_car", "import_car", "write_car"]

log = logging.getLogger(__name__)

#: The first 11 bytes of every CARv2: a CARv1-style header ``{"version": 2}``.
CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")
_V2_HEADER = struct.Struct("<16sQQQ")
#: Refuse headers longer than this (a header is roots only; 4 MiB is ~100k roots).
MAX_HEADER_SIZE = 4 * 1024 * 1024
#: A section is a CID (at most ~140 bytes with an identity hash) plus a block.
_MAX_CID_SIZE = 256


# -- writing ---------------------------------------------------------------------------


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 1 << 8:
        return bytes([(major << 5) | 24, n])
    if n < 1 << 16:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    if n < 1 << 32:
        return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")
    return bytes([(major << 5) | 27]) + n.to_bytes(8, "big")


def encode_header(roots: Iterable[CID], version: int = 1) -> bytes:
    """The dag-cbor CARv1 header ``{"roots": [...], "version": 1}`` (without its length
    prefix). Keys in dag-cbor canonical order (shorter first); CIDs as tag 42 over the
    binary CID prefixed with the 0x00 multibase byte."""
    roots = list(roots)
    out = bytearray(_cbor_head(5, 2))
    out += _cbor_head(3, 5) + b"roots"
    out += _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\x00" + root.to_bytes()
        out += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    out += _cbor_head(3, 7) + b"version" + _cbor_head(0, version)
    return bytes(out)


def write_car(out: BinaryIO, roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1 with ``roots`` and ``blocks`` (in the order given) to ``out``;
    return the number of bytes written. Blocks are written as given (the caller has
    verified them; :func:`export_car` gets them verified from a source)."""
    header = encode_header(roots)
    written = out.write(encode_varint(len(header)) + header)
    for cid, block in blocks:
        raw = cid.to_bytes()
        written += out.write(encode_varint(len(raw) + len(block)) + raw)
        written += out.write(block)
    return written


def export_car(source, root: CID, out: BinaryIO) -> int:
    """Write the whole DAG under ``root`` as a CARv1, like ``ipfs dag export``:
    depth-first, first-seen order, no duplicates, identity blocks left out. Every
    block is fetched verified from ``source``; a missing one raises
    :class:`BlockNotFoundError` (the output is then incomplete: write it to a temp file)."""
    return write_car(out, [root], walk_dfs(source, root))


# -- reading ---------------------------------------------------------------------------


class _ChunkStream:
    """``read(n)`` over an iterator of byte chunks (e.g. ``httpx.Response.iter_bytes()``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                break
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


class _CborReader:
    """Just enough dag-cbor to read CAR headers: maps, text, arrays, ints, bytes, tag 42."""

    def __init__(self, buf: bytes, base_offset: int) -> None:
        self.buf, self.pos, self.base = buf, 0, base_offset

    def fail(self, msg: str) -> CARFormatError:
        return CARFormatError(f"CAR header at byte {self.base + self.pos}: {msg}")

    def _head(self) -> tuple[int, int]:
        if self.pos >= len(self.buf):
            raise self.fail("truncated")
        b = self.buf[self.pos]
        self.pos += 1
        major, info = b >> 5, b & 0x1F
        if info < 24:
            return major, info
        if info > 27:
            raise self.fail(f"unsupported CBOR additional info {info}")
        size = 1 << (info - 24)
        if self.pos + size > len(self.buf):
            raise self.fail("truncated")
        value = int.from_bytes(self.buf[self.pos:self.pos + size], "big")
        self.pos += size
        return major, value

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise self.fail("nested too deeply")
        major, value = self._head()
        if major == 0:
            return value
        if major in (2, 3):
            end = self.pos + value
            if end > len(self.buf):
                raise self.fail("truncated string")
            raw = self.buf[self.pos:end]
            self.pos = end
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("invalid UTF-8 in a key") from None
        if major == 4:
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            out = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str) or key in out:
                    raise self.fail(f"bad or repeated map key {key!r}")
                out[key] = self.item(depth + 1)
            return out
        if major == 6 and value == 42:
            tagged = self.item(depth + 1)
            if not isinstance(tagged, bytes) or tagged[:1] != b"\x00":
                raise self.fail("tag 42 must wrap bytes starting with 0x00")
            try:
                return CID.decode(tagged[1:])
            except InvalidCIDError as e:
                raise self.fail(f"bad root CID: {e.reason}") from None
        if major == 7 and value in (20, 21, 22):
            return {20: False, 21: True, 22: None}[value]
        raise self.fail(f"unsupported CBOR item (major type {major})")


class CarReader:
    """Read a CARv1 or CARv2 stream, yielding verified ``(cid, block)`` pairs.

    ``stream`` is anything with ``read(n)`` (a file, a socket file, ``io.BytesIO``) or an
    iterable of ``bytes`` chunks (an HTTP body). The header is read on construction:
    :attr:`version` (1 or 2) and :attr:`roots`. Iterating (once) yields each section's
    CID and block after checking the hash (:class:`IntegrityError` otherwise); blocks
    over 2 MiB raise :class:`BlockTooLargeError`; anything malformed or truncated raises
    :class:`CARFormatError` naming the byte offset. For CARv2 the reader skips forward to
    the data offset by reading, stops after ``data size`` bytes and ignores the index.
    """

    def __init__(self, stream: BinaryIO | Iterable[bytes], *, verify: bool = True) -> None:
        self._stream = stream if hasattr(stream, "read") else _ChunkStream(stream)  # type: ignore[arg-type]
        self.offset = 0
        self.verify = verify
        self._end: int | None = None  # CARv2: where the inner CARv1 ends
        self._iterated = False
        self.data_offset = 0
        self.data_size: int | None = None
        header = self._read_header()
        if header.get("version") == 2:
            if header != {"version": 2}:
                raise CARFormatError(f"CARv2 pragma with extra keys: {sorted(header)}")
            self._read_v2_header()
            self.version = 2
            header = self._read_header()
            if header.get("version") != 1:
                raise CARFormatError(f"CARv2 payload at byte {self.data_offset} is not a CARv1")
        else:
            self.version = 1
        if header.get("version") != 1:
            raise CARFormatError(f"unsupported CAR version {header.get('version')!r}")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
            raise CARFormatError("CAR header 'roots' must be a list of CIDs")
        self.roots: list[CID] = roots

    # -- low level --------------------------------------------------------------------

    def _read(self, n: int, what: str, cid: CID | None = None) -> bytes:
        """``n`` bytes of ``what`` (``"block"`` of ``cid``: named only in an error, since
        a CIDv0's text form costs a base58 encoding, 10% of a gateway stream's time)."""
        out = self._stream.read(n) if n else b""
        if len(out) < n:  # file objects may return short reads before EOF: keep reading
            parts = [out]
            got = len(out)
            while got < n:
                more = self._stream.read(n - got)
                if not more:
                    name = what if cid is None else f"{what} {cid}"
                    raise CARFormatError(
                        f"CAR truncated at byte {self.offset + got}: {name} needs {n} bytes, got {got}"
                    )
                parts.append(more)
                got += len(more)
            out = b"".join(parts)
        self.offset += n
        return out

    def _read_varint(self, what: str, *, eof_ok: bool) -> int | None:
        start = self.offset
        value = shift = 0
        for i in range(10):
            b = self._stream.read(1)
            if not b:
                if i == 0 and eof_ok:
                    return None
                raise CARFormatError(f"CAR truncated at byte {start + i}: inside the {what} varint")
            self.offset += 1
            value |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                if b[0] == 0 and i > 0:
                    raise CARFormatError(f"non-minimal {what} varint at byte {start}")
                return value
            shift += 7
        raise CARFormatError(f"{what} varint at byte {start} is too long")

    def _read_header(self) -> dict:
        start = self.offset
        length = self._read_varint("header length", eof_ok=True)
        if length is None:
            raise CARFormatError(f"empty CAR stream at byte {start}: no header")
        if length == 0 or length > MAX_HEADER_SIZE:
            raise CARFormatError(f"CAR header length {length} at byte {start} is invalid")
        body_at = self.offset
        body = self._read(length, "the header")
        reader = _CborReader(body, body_at)
        header = reader.item()
        if reader.pos != len(body):
            raise CARFormatError(f"CAR header at byte {body_at}: {len(body) - reader.pos} trailing bytes")
        if not isinstance(header, dict):
            raise CARFormatError(f"CAR header at byte {body_at} is not a map")
        return header

    def _read_v2_header(self) -> None:
        if self.offset != len(CARV2_PRAGMA):
            raise CARFormatError("CARv2 pragma is not at the start of the stream")
        _chars, data_offset, data_size, _index_offset = _V2_HEADER.unpack(
            self._read(_V2_HEADER.size, "the CARv2 header")
        )
        if data_offset < self.offset:
            raise CARFormatError(f"CARv2 data offset {data_offset} points inside the header")
        # Skip the padding by reading: the stream need not be seekable.
        while self.offset < data_offset:
            self._read(min(data_offset - self.offset, 1 << 20), "CARv2 padding")
        self.data_offset, self.data_size = data_offset, data_size
        self._end = data_offset + data_size

    # -- sections -----------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        if self._iterated:
            raise RuntimeError("a CarReader can be iterated only once")
        self._iterated = True
        return self._sections()

    def _sections(self) -> Iterator[tuple[CID, bytes]]:
        while True:
            if self._end is not None and self.offset >= self._end:
                if self.offset > self._end:
                    raise CARFormatError(f"CARv2 section runs past the data size, to byte {self.offset}")
                return
            start = self.offset
            length = self._read_varint("section length", eof_ok=self._end is None)
            if length is None:
                return
            if length == 0:
                raise CARFormatError(f"empty CAR section at byte {start}")
            if self._end is not None and self.offset + length > self._end:
                raise CARFormatError(f"CAR section at byte {start} runs past the CARv2 data size")
            cid_at = self.offset
            head = self._read(min(length, _MAX_CID_SIZE), "a section")
            cid, cid_len = self._parse_cid(head, cid_at)
            block_len = length - cid_len
            if block_len > MAX_BLOCK_SIZE:
                raise BlockTooLargeError(cid, block_len, MAX_BLOCK_SIZE, f"CAR at byte {start}")
            block = head[cid_len:] + self._read(length - len(head), "block", cid)
            if self.verify:
                verify_block(cid, block, f"CAR at byte {start}")
            yield cid, block

    @staticmethod
    def _parse_cid(head: bytes, at: int) -> tuple[CID, int]:
        try:
            if head[:2] == b"\x12\x20":
                n = 34
            else:
                version, pos = decode_varint(head, 0)
                if version != 1:
                    raise ValueError(f"CID version {version}")
                _codec, pos = decode_varint(head, pos)
                _code, pos = decode_varint(head, pos)
                digest_len, pos = decode_varint(head, pos)
                n = pos + digest_len
            if n > len(head):
                raise ValueError("CID runs past its section")
            return CID.decode(head[:n]), n
        except (ValueError, InvalidCIDError) as e:
            raise CARFormatError(f"bad CID in the CAR section at byte {at}: {e}") from None


def import_car(stream: BinaryIO | Iterable[bytes], store) -> list[CID]:
    """Import every block of a CAR (v1 or v2) into ``store``; return the roots.

    Each block is verified by the reader before ``store.put`` (which verifies again, as
    every store does). A CAR that lacks some blocks imports what it has: a later read of
    the missing part raises :class:`BlockNotFoundError`. A bad block stops the import
    with its error; blocks before it are already stored (all verified).
    """
    reader = CarReader(stream)
    count = 0

    def counted() -> Iterator[tuple[CID, bytes]]:
        nonlocal count
        for item in reader:
            count += 1
            yield item

    store.put_many(counted())
    log.debug("imported %d blocks, roots %s", count, [str(r) for r in reader.roots])
    return reader.roots
