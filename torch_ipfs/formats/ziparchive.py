"""Zip archives as datasets, read with byte ranges (never downloaded whole).

The central directory is found from the end-of-central-directory record (zip64 too)
with one or two range reads at the end of the file; then each member is read once, by
range, when its sample is asked for. Members are grouped into samples by WebDataset key
(``a/0001.png`` + ``a/0001.cls`` -> one sample ``a/0001``), in central-directory order;
each archive is one shard.

Refused with :class:`ManifestError` (before anything is decompressed):

- names that leave the archive (``../x``, ``/x``, ``C:x``), encrypted members, methods
  other than stored (0) and deflate (8);
- zip bombs: a member declaring more than :attr:`ZipLayout.max_member_bytes`, an archive
  declaring more than :attr:`ZipLayout.max_total_bytes`, a compression ratio over
  :attr:`ZipLayout.max_ratio` (for members over 1 MiB), overlapping members (the
  "overlapping files" bomb), and a member inflating past its declared size or failing
  its CRC-32.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch_ipfs.cid import IPFSPath
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import (
    ClientHandle,
    Layout,
    RawSample,
    SampleSchema,
    check_member_name,
    check_sample_size,
    split_key,
)

__all__ = ["ZipLayout", "ZipMember", "read_central_directory"]

_EOCD = struct.Struct("<4sHHHHIIH")
_EOCD64_LOCATOR = struct.Struct("<4sIQI")
_EOCD64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_MAX_COMMENT = 65535
_RATIO_FLOOR = 1 << 20  # small members may compress very well without being bombs
#: A central directory is ~50 bytes plus the name per member: 256 MiB is millions of
#: members; a larger one is refused before it is read.
MAX_CENTRAL_DIRECTORY_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ZipMember:
    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int  # of the local header


@dataclass(frozen=True)
class _Limits:
    max_member_bytes: int
    max_total_bytes: int
    max_ratio: float


def _u64_extra(extra: bytes, wanted: list[str], where: str) -> dict[str, int]:
    """Values of the zip64 extra field (id 1) for the fields that overflowed."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 1:
            if len(body) < 8 * len(wanted):
                raise ManifestError(f"{where}: zip64 extra field too short")
            return {name: struct.unpack_from("<Q", body, 8 * i)[0] for i, name in enumerate(wanted)}
        pos += 4 + size
    raise ManifestError(f"{where}: zip64 sizes announced but no zip64 extra field")


def read_central_directory(read_range: Any, size: int, where: str, limits: _Limits) -> list[ZipMember]:
    """The file members of a zip archive, checked against path traversal and bombs."""
    tail_len = min(size, _EOCD.size + _MAX_COMMENT + _EOCD64_LOCATOR.size)
    tail_start = size - tail_len
    tail = read_range(tail_start, tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + _EOCD.size > len(tail):
        raise ManifestError(f"{where}: not a zip archive (no end-of-central-directory record)")
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
    if disk or cd_disk:
        raise ManifestError(f"{where}: multi-disk zip archives are not supported")
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = pos - _EOCD64_LOCATOR.size
        if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
            raise ManifestError(f"{where}: zip64 archive without a zip64 locator")
        _, _, eocd64_offset, _ = _EOCD64_LOCATOR.unpack_from(tail, loc)
        if eocd64_offset + _EOCD64.size > size:
            raise ManifestError(f"{where}: zip64 end-of-central-directory record past the end of the file")
        record = read_range(eocd64_offset, _EOCD64.size)
        if len(record) < _EOCD64.size or record[:4] != b"PK\x06\x06":
            raise ManifestError(f"{where}: bad zip64 end-of-central-directory record")
        _, _, _, _, _, _, _, count, cd_size, cd_offset = _EOCD64.unpack(record)
    if cd_offset + cd_size > size:
        raise ManifestError(f"{where}: central directory runs past the end of the file")
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise ManifestError(
            f"{where}: central directory of {cd_size} bytes, over {MAX_CENTRAL_DIRECTORY_BYTES}"
        )
    directory = read_range(cd_offset, cd_size)
    members: list[ZipMember] = []
    pos = 0
    total = 0
    for _ in range(count):
        if directory[pos : pos + 4] != b"PK\x01\x02" or pos + _CENTRAL.size > len(directory):
            raise ManifestError(
                f"{where}: corrupt central directory at entry {len(members)} "
                f"(shorter than the {count} entries it declares?)"
            )
        fields = _CENTRAL.unpack_from(directory, pos)
        flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
        name_len, extra_len, comment_len, offset = fields[10], fields[11], fields[12], fields[16]
        raw_name = directory[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        extra = directory[pos + _CENTRAL.size + name_len : pos + _CENTRAL.size + name_len + extra_len]
        pos += _CENTRAL.size + name_len + extra_len + comment_len
        if len(raw_name) != name_len:
            raise ManifestError(f"{where}: central directory entry {len(members)} is cut off")
        try:
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError as e:
            raise ManifestError(f"{where}: member name {raw_name!r} is flagged UTF-8 but is not") from e
        wanted = [n for n, v in (("usize", usize), ("csize", csize), ("offset", offset)) if v == 0xFFFFFFFF]
        if wanted:
            big = _u64_extra(extra, wanted, f"{where}: {name!r}")
            usize, csize, offset = big.get("usize", usize), big.get("csize", csize), big.get("offset", offset)
        if name.endswith("/"):
            check_member_name(name, where)
            continue  # a directory entry
        name = check_member_name(name, where)
        if flags & 0x1:
            raise ManifestError(f"{where}: member {name!r} is encrypted")
        if method not in (0, 8):
            raise ManifestError(f"{where}: member {name!r} uses compression method {method} (only 0, 8)")
        if usize > limits.max_member_bytes:
            raise ManifestError(
                f"{where}: member {name!r} declares {usize} bytes, over {limits.max_member_bytes}"
            )
        if usize > _RATIO_FLOOR and usize > limits.max_ratio * max(csize, 1):
            raise ManifestError(
                f"{where}: member {name!r} would inflate {csize} -> {usize} bytes, over the ratio "
                f"limit {limits.max_ratio:g} (zip bomb?)"
            )
        total += usize
        if total > limits.max_total_bytes:
            raise ManifestError(f"{where}: archive declares over {limits.max_total_bytes} uncompressed bytes")
        members.append(ZipMember(name, method, crc, csize, usize, offset))
    _check_no_overlap(members, cd_offset, where)
    return members


def _check_no_overlap(members: list[ZipMember], cd_offset: int, where: str) -> None:
    ordered = sorted(members, key=lambda m: m.offset)
    for a, b in zip(ordered, ordered[1:] + [None]):
        end = a.offset + _LOCAL.size + len(a.name.encode()) + a.compressed_size
        limit = b.offset if b is not None else cd_offset
        if end > limit:
            raise ManifestError(
                f"{where}: member {a.name!r} overlaps the next one (overlapping-file zip bomb?)"
            )


class ZipLayout(Layout):
    """Samples grouped from the members of one or more zip archives."""

    name = "zip"
    max_member_bytes = 1 << 30
    max_total_bytes = 1 << 36
    max_ratio = 1000.0

    def __init__(self, client: ClientHandle, where: str, archives: list[tuple[str, IPFSPath]]) -> None:
        super().__init__(client, where)
        if not archives:
            raise ManifestError(f"{where}: no zip archives")
        self.archives = archives
        self.schema = SampleSchema(structure="dict", with_key=True)
        self._samples: dict[int, list[tuple[str, list[tuple[str, ZipMember]]]]] = {}

    def _where(self, i: int) -> str:
        return f"{self.where}: {self.archives[i][0]}"

    def _index(self, i: int) -> list[tuple[str, list[tuple[str, ZipMember]]]]:
        if i not in self._samples:
            f = self.file(self.archives[i][1])
            limits = _Limits(self.max_member_bytes, self.max_total_bytes, self.max_ratio)
            members = read_central_directory(f.read_range, f.size, self._where(i), limits)
            samples: list[tuple[str, list[tuple[str, ZipMember]]]] = []
            for m in members:
                split = split_key(m.name) or (m.name, "bin")
                if samples and samples[-1][0] == split[0]:
                    samples[-1][1].append((split[1], m))
                else:
                    samples.append((split[0], [(split[1], m)]))
            self._samples[i] = samples
        return self._samples[i]

    def shard_sizes(self) -> list[int]:
        return [len(self._index(i)) for i in range(len(self.archives))]

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        f = self.file(self.archives[shard][1])
        for key, members in self._index(shard)[start:stop]:
            # what the sample declares, compressed (what is fetched) and not (what is kept)
            declared = sum(max(m.size, m.compressed_size) for _, m in members)
            check_sample_size(declared, f"{self._where(shard)}: sample {key!r}")
            fields: dict[str, Any] = {}
            for fname, m in members:
                if fname in fields:
                    raise ManifestError(f"{self._where(shard)}: sample {key!r} has field {fname!r} twice")
                fields[fname] = self._read_member(f, m, self._where(shard))
            yield RawSample(key, fields)

    @staticmethod
    def _read_member(f: Any, m: ZipMember, where: str) -> bytes:
        name_len = len(m.name.encode("utf-8"))
        slack = 256
        head = f.read_range(m.offset, _LOCAL.size + name_len + slack + m.compressed_size)
        if len(head) < _LOCAL.size or head[:4] != b"PK\x03\x04":
            raise ManifestError(f"{where}: bad local header for {m.name!r} at {m.offset}")
        local = _LOCAL.unpack_from(head)
        start = _LOCAL.size + local[9] + local[10]
        data = head[start : start + m.compressed_size]
        if len(data) < m.compressed_size:
            data = f.read_range(m.offset + start, m.compressed_size)
        if len(data) != m.compressed_size:
            raise ManifestError(f"{where}: member {m.name!r} is truncated")
        if m.method == 8:
            inflater = zlib.decompressobj(-15)
            try:
                out = inflater.decompress(data, m.size + 1)
            except zlib.error as e:
                raise ManifestError(f"{where}: member {m.name!r} is not a valid deflate stream ({e})") from e
            if len(out) > m.size or inflater.unconsumed_tail:
                raise ManifestError(f"{where}: member {m.name!r} inflates past its declared {m.size} bytes")
        else:
            out = data
        if len(out) != m.size:
            raise ManifestError(f"{where}: member {m.name!r} is {len(out)} bytes, declared {m.size}")
        if zlib.crc32(out) != m.crc:
            raise ManifestError(f"{where}: member {m.name!r} fails its CRC-32")
        return out

    def describe(self) -> list[str]:
        return super().describe() + [f"Archives: {len(self.archives)}"]
