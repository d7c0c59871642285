"""dag-pb and UnixFS: the protobuf codecs, by hand.

No protobuf library reproduces the byte-exact choices Kubo makes (links before data,
an empty-but-present ``Name`` on file chunk links, unpacked ``blocksizes``), and CIDs
depend on every byte, so both messages are encoded and strictly decoded here:

    PBNode  { repeated PBLink Links = 2; optional bytes Data = 1; }   wire order: Links, Data
    PBLink  { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
    Data    { Type = 1; Data = 2; filesize = 3; repeated blocksizes = 4; hashType = 5;
              fanout = 6; mode = 7; mtime = 8 (UnixFSTime { Seconds = 1; FractionalNanoseconds = 2 }) }

Decoding rejects unknown fields, duplicated singular fields, out-of-order PBNode/PBLink
fields and wrong wire types, as the dag-pb spec asks of strict decoders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from torch_ipfs.cid import CID
from torch_ipfs.errors import InvalidCIDError, UnixFSFormatError
from torch_ipfs.varint import decode_varint, encode_varint

__all__ = ["DataType", "PBLink", "PBNode", "UnixFSData", "decode_node", "encode_node"]

_VARINT, _LEN = 0, 2


class DataType(IntEnum):
    """UnixFS node types."""

    Raw = 0
    Directory = 1
    File = 2
    Metadata = 3
    Symlink = 4
    HAMTShard = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """A dag-pb link. ``name=None`` means absent; ``""`` is present-but-empty (file chunks)."""

    cid: CID
    name: str | None = None
    tsize: int | None = None


@dataclass(slots=True)
class PBNode:
    """A dag-pb node: ``links`` and opaque ``data`` (a UnixFS ``Data`` message for UnixFS)."""

    links: list[PBLink] = field(default_factory=list)
    data: bytes | None = None


@dataclass(slots=True)
class UnixFSData:
    """The UnixFS ``Data`` message carried in :attr:`PBNode.data`."""

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None  # (seconds, nanoseconds)

    def encode(self) -> bytes:
        out = bytearray(_key(1, _VARINT) + encode_varint(int(self.type)))
        if self.data is not None and (self.data or self.type == DataType.HAMTShard):
            out += _bytes_field(2, self.data)
        if self.filesize is not None:
            out += _key(3, _VARINT) + encode_varint(self.filesize)
        for size in self.blocksizes:  # proto2 repeated scalar: unpacked, as Go writes it
            out += _key(4, _VARINT) + encode_varint(size)
        if self.hash_type is not None:
            out += _key(5, _VARINT) + encode_varint(self.hash_type)
        if self.fanout is not None:
            out += _key(6, _VARINT) + encode_varint(self.fanout)
        if self.mode is not None:
            out += _key(7, _VARINT) + encode_varint(self.mode)
        if self.mtime is not None:
            secs, nanos = self.mtime
            inner = _key(1, _VARINT) + encode_varint(secs & 0xFFFFFFFFFFFFFFFF)
            if nanos:
                inner += _key(2, 5) + int(nanos).to_bytes(4, "little")
            out += _bytes_field(8, inner)
        return bytes(out)

    @classmethod
    def decode(cls, buf: bytes) -> UnixFSData:
        """Strictly decode a UnixFS ``Data`` message."""
        seen: set[int] = set()
        node = cls(DataType.Raw)
        pos = 0
        try:
            while pos < len(buf):
                num, wt, pos = _read_key(buf, pos)
                if num != 4 and num in seen:
                    raise UnixFSFormatError(f"UnixFS field {num} repeated")
                seen.add(num)
                if num in (1, 3, 4, 5, 6, 7):
                    if wt == _LEN and num == 4:
                        raise UnixFSFormatError("packed blocksizes are not valid UnixFS")
                    _expect(wt, _VARINT, num)
                    value, pos = decode_varint(buf, pos)
                    if num == 1:
                        try:
                            node.type = DataType(value)
                        except ValueError:
                            raise UnixFSFormatError(f"unknown UnixFS type {value}") from None
                    elif num == 3:
                        node.filesize = value
                    elif num == 4:
                        node.blocksizes.append(value)
                    elif num == 5:
                        node.hash_type = value
                    elif num == 6:
                        node.fanout = value
                    else:
                        node.mode = value
                elif num in (2, 8):
                    _expect(wt, _LEN, num)
                    field_bytes, pos = _read_bytes(buf, pos)
                    if num == 2:
                        node.data = field_bytes
                    else:
                        node.mtime = _decode_mtime(field_bytes)
                else:
                    raise UnixFSFormatError(f"unknown UnixFS field {num}")
        except ValueError as e:
            if isinstance(e, UnixFSFormatError):
                raise
            raise UnixFSFormatError(f"malformed UnixFS data: {e}") from None
        if 1 not in seen:
            raise UnixFSFormatError("UnixFS data has no Type")
        return node


def encode_node(node: PBNode) -> bytes:
    """Encode a dag-pb node in canonical form (links, then data)."""
    out = bytearray()
    for link in node.links:
        body = _bytes_field(1, link.cid.to_bytes())
        if link.name is not None:
            body += _bytes_field(2, link.name.encode("utf-8", "surrogateescape"))
        if link.tsize is not None:
            body += _key(3, _VARINT) + encode_varint(link.tsize)
        out += _bytes_field(2, body)
    if node.data is not None:
        out += _bytes_field(1, node.data)
    return bytes(out)


def decode_node(buf: bytes | memoryview) -> PBNode:
    """Strictly decode a dag-pb block."""
    buf = bytes(buf)
    node = PBNode()
    pos = 0
    try:
        while pos < len(buf):
            num, wt, pos = _read_key(buf, pos)
            if num == 2:
                if node.data is not None:
                    raise UnixFSFormatError("dag-pb Links after Data")
                _expect(wt, _LEN, num)
                body, pos = _read_bytes(buf, pos)
                node.links.append(_decode_link(body))
            elif num == 1:
                if node.data is not None:
                    raise UnixFSFormatError("dag-pb Data repeated")
                _expect(wt, _LEN, num)
                node.data, pos = _read_bytes(buf, pos)
            else:
                raise UnixFSFormatError(f"unknown dag-pb PBNode field {num}")
    except ValueError as e:
        if isinstance(e, UnixFSFormatError):
            raise
        raise UnixFSFormatError(f"malformed dag-pb node: {e}") from None
    return node


def _decode_link(body: bytes) -> PBLink:
    pos = 0
    last = 0
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    while pos < len(body):
        num, wt, pos = _read_key(body, pos)
        if num <= last:
            raise UnixFSFormatError(f"dag-pb PBLink field {num} repeated or out of order")
        last = num
        if num == 1:
            _expect(wt, _LEN, num)
            raw, pos = _read_bytes(body, pos)
            try:
                cid = CID.decode(raw)
            except InvalidCIDError as e:
                raise UnixFSFormatError(f"dag-pb link with a bad CID: {e.reason}") from None
        elif num == 2:
            _expect(wt, _LEN, num)
            raw, pos = _read_bytes(body, pos)
            name = raw.decode("utf-8", "surrogateescape")
        elif num == 3:
            _expect(wt, _VARINT, num)
            tsize, pos = decode_varint(body, pos)
        else:
            raise UnixFSFormatError(f"unknown dag-pb PBLink field {num}")
    if cid is None:
        raise UnixFSFormatError("dag-pb link without Hash")
    return PBLink(cid, name, tsize)


def _decode_mtime(buf: bytes) -> tuple[int, int | None]:
    pos = 0
    secs: int | None = None
    nanos: int | None = None
    while pos < len(buf):
        num, wt, pos = _read_key(buf, pos)
        if num == 1 and wt == _VARINT and secs is None:
            secs, pos = decode_varint(buf, pos)
            if secs >= 1 << 63:
                secs -= 1 << 64
        elif num == 2 and wt == 5 and nanos is None:
            if pos + 4 > len(buf):
                raise UnixFSFormatError("truncated mtime nanoseconds")
            nanos = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise UnixFSFormatError(f"bad UnixFS mtime field {num}")
    if secs is None:
        raise UnixFSFormatError("UnixFS mtime without Seconds")
    return secs, nanos


def _key(num: int, wire_type: int) -> bytes:
    return encode_varint((num << 3) | wire_type)


def _bytes_field(num: int, data: bytes) -> bytes:
    return _key(num, _LEN) + encode_varint(len(data)) + data


def _read_key(buf: bytes, pos: int) -> tuple[int, int, int]:
    key, pos = decode_varint(buf, pos)
    return key >> 3, key & 7, pos


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = decode_varint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise UnixFSFormatError("length-delimited field runs past the end of the block")
    return buf[pos:end], end


def _expect(wire_type: int, expected: int, num: int) -> None:
    if wire_type != expected:
        raise UnixFSFormatError(f"field {num} has wire type {wire_type}, expected {expected}")
