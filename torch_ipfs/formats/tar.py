"""Tar archives, both ways: a deterministic writer and a strict, bounded-memory reader.

The reader parses headers itself (ustar, GNU ``././@LongLink`` names and pax ``path``/
``size`` records) so that it can work on any byte range of an archive: one sample's
bytes fetched by range, a run of samples streamed, or only the 512-byte headers read
to build an index of an archive that came without one. Member names that could escape
a directory (``../x``, ``/etc/passwd``) are refused with :class:`ManifestError`.
"""

from __future__ import annotations

import itertools
import logging
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from torch_ipfs import config
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import RawSample, check_member_name, check_sample_size, split_key

__all__ = [
    "BLOCK",
    "ChunkReader",
    "ShardIndex",
    "TarMember",
    "group_samples",
    "iter_indexed",
    "iter_members",
    "iter_named_members",
    "member_size",
    "samples_of",
    "scan_index",
    "write_tar_shard",
]

log = logging.getLogger(__name__)

BLOCK = 512
_DATA_TYPES = (b"0", b"\x00", b"7")  # regular file ('7' = contiguous, read as regular)
_SKIP_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, dirs, FIFOs: no sample data


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


# -- writing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample of a tar shard is: sample ``i`` (key ``keys[i]``) is the bytes
    ``[offsets[i], offsets[i + 1])`` of the archive (its headers and padded data);
    ``offsets[-1]`` is where the end-of-archive blocks start."""

    keys: list[str]
    offsets: list[int]

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.keys) + 1:
            raise ManifestError(
                f"index has {len(self.keys)} keys but {len(self.offsets)} offsets (needs keys + 1)"
            )

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def samples(self) -> list[tuple[str, int, int]]:
        """``(key, offset, length)`` per sample."""
        o = self.offsets
        return [(k, o[i], o[i + 1] - o[i]) for i, k in enumerate(self.keys)]

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """``(offset, length)`` of samples ``start .. stop-1``."""
        return self.offsets[start], self.offsets[stop] - self.offsets[start]

    def to_json(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "offsets": list(self.offsets)}


def member_size(name: str, size: int) -> int:
    """Bytes a member written by :func:`write_tar_shard` takes: its header (plus a GNU
    long-name record when the UTF-8 name is over 100 bytes, as ``tarfile`` writes it)
    and its data padded to a block."""
    name_bytes = len(name.encode("utf-8"))
    long_name = BLOCK + _padded(name_bytes + 1) if name_bytes > tarfile.LENGTH_NAME else 0
    return long_name + BLOCK + _padded(size)


# The fixed parts of every header written here (GNU format, regular file, mode 0644,
# uid/gid/mtime 0, no user or group names, no device numbers). Spelled out rather than
# left to ``tarfile`` so a shard's bytes (and so its CID) do not depend on the running
# Python: ``tarfile`` has changed how it writes the device fields between releases.
_HEADER_MODE_IDS = b"0000644\x000000000\x000000000\x00"
_HEADER_MTIME = b"00000000000\x00"
_HEADER_TAIL = b"0" + bytes(100) + b"ustar  \x00" + bytes(64 + 16 + 155 + 12)
_HEADER_TAIL_SUM = sum(_HEADER_TAIL) + 8 * 0x20  # the checksum field counts as 8 spaces
_MAX_OCTAL_SIZE = 8**11  # 11 octal digits; larger sizes take GNU's base-256 form


def _header(name: str, size: int) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > tarfile.LENGTH_NAME or size >= _MAX_OCTAL_SIZE:
        return _tarfile_header(name, size)  # a GNU long-name record or a base-256 size
    head = raw.ljust(tarfile.LENGTH_NAME, b"\0") + _HEADER_MODE_IDS + b"%011o\x00" % size + _HEADER_MTIME
    checksum = _HEADER_TAIL_SUM + sum(head)
    return head + b"%06o\x00 " % checksum + _HEADER_TAIL


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    # GNU format: names of any length (././@LongLink), and no pax records (pax would add
    # nothing for these fields, but GNU keeps the header bytes a function of name and size).
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")


def _members_of(sample: Any) -> tuple[str, dict[str, bytes]]:
    if isinstance(sample, tuple) and len(sample) == 2:
        key, fields = sample
    elif isinstance(sample, dict):
        fields = dict(sample)
        key = fields.pop("__key__", None)
        if key is None:
            raise ValueError("a dict sample for write_tar_shard needs a '__key__' entry")
    else:
        raise TypeError(f"write_tar_shard takes (key, fields) pairs or dicts with '__key__': {sample!r:.60}")
    return str(key), fields


def write_tar_shard(samples: Iterable[Any], out: IO[bytes]) -> ShardIndex:
    """Write samples as one tar shard (WebDataset conventions) and return its index.

    ``samples`` yields ``(key, {field: bytes})`` pairs (or dicts with ``"__key__"``);
    each field becomes a member ``<key>.<field>``, in the sample's own field order. The
    bytes depend on the samples only: mtime 0, uid/gid 0, empty user/group names, mode
    0644, GNU format, ended by the two zero blocks. Unlike ``tarfile`` it does not pad
    the archive to a 10 KiB record: shards stay within the size the exporter plans
    (every tar reader accepts this; the headers and data are what ``tarfile`` writes).
    """
    keys: list[str] = []
    offsets: list[int] = []
    pos = 0
    seen: set[str] = set()
    for sample in samples:
        key, fields = _members_of(sample)
        where = f"sample {key!r}"
        if split_key(f"{key}.x") != (key, "x"):
            raise ValueError(f"{where}: a key may not contain '.' in its last path segment")
        check_member_name(key, where)
        if key in seen:
            raise ValueError(f"{where}: duplicate key in one shard")
        if not fields:
            raise ValueError(f"{where}: a sample needs at least one field")
        seen.add(key)
        keys.append(key)
        offsets.append(pos)
        for fname, data in fields.items():
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"{where}: field {fname!r} must be bytes, got {type(data).__name__}")
            if not fname or fname.startswith(".") or "/" in fname:
                raise ValueError(f"{where}: bad field name {fname!r}")
            header = _header(f"{key}.{fname}", len(data))
            out.write(header)
            out.write(data)
            pad = _padded(len(data)) - len(data)
            if pad:
                out.write(b"\0" * pad)
            pos += len(header) + _padded(len(data))
    offsets.append(pos)
    out.write(b"\0" * (2 * BLOCK))  # end of archive; no padding to 10 KiB records (see above)
    return ShardIndex(keys, offsets)


# -- header parsing ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    name: str
    size: int
    type: bytes


def _octal(field: bytes, what: str, where: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values over the octal range
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ManifestError(f"{where}: tar header has a bad {what} field {field!r}") from None


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _parse_header(block: bytes, where: str) -> _Header | None:
    """Parse one 512-byte header; ``None`` for an all-zero (end-of-archive) block."""
    if len(block) < BLOCK:
        raise ManifestError(f"{where}: truncated tar header ({len(block)} bytes)")
    if block.count(0) == BLOCK:
        return None
    stored = _octal(block[148:156], "checksum", where)
    unsigned = sum(block[:148]) + 256 + sum(block[156:])  # the checksum field counts as spaces
    if stored != unsigned:
        signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
        if stored != signed:
            raise ManifestError(f"{where}: tar header checksum mismatch (not a tar archive, or corrupt)")
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\x00":  # POSIX: a prefix field extends the name
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return _Header(_decode_name(name), _octal(block[124:136], "size", where), block[156:157])


def _pax_records(data: bytes, where: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ManifestError(f"{where}: malformed pax header record") from None
        if length <= 0 or pos + length > len(data):
            raise ManifestError(f"{where}: malformed pax header record length {length}")
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


#: Long-name and pax records are a few hundred bytes; a larger one is refused unread.
MAX_EXTENSION_BYTES = 1024 * 1024
#: Headers read from one archive (members plus their long-name/pax records): a hostile,
#: consistent "archive" of 2^50 bytes of empty members would otherwise be scanned for
#: days; 10 million is far above any real shard (even ImageNet's 1.28M files in one tar).
MAX_MEMBERS = 10_000_000


def _pax_size(pax: dict[str, str], default: int, where: str) -> int:
    raw = pax.get("size")
    if raw is None:
        return default
    if not (0 < len(raw) <= 20 and raw.isdigit()):  # a 64-bit decimal, nothing else
        raise ManifestError(f"{where}: pax size {raw[:40]!r} is not a byte count")
    return int(raw)


@dataclass(frozen=True)
class TarMember:
    """A regular file in an archive: ``offset`` of its first header (including any
    long-name/pax headers before it), ``data_offset`` of its bytes, ``size``."""

    name: str
    offset: int
    data_offset: int
    size: int

    @property
    def end(self) -> int:
        return self.data_offset + _padded(self.size)


def _walk(
    read_block: Callable[[int], bytes], read_data: Callable[[int, int], Any], start: int, where: str
) -> Iterator[tuple[TarMember, Any]]:
    """Yield ``(member, read_data(data_offset, size))`` for the regular members from
    archive offset ``start`` until the end-of-archive block or the end of the bytes.

    ``read_block(n)`` returns the next ``n`` bytes (headers, extension records);
    ``read_data`` must consume (or skip) a member's padded data and may return it.
    """
    pos = start
    long_name: str | None = None
    pax: dict[str, str] = {}
    member_start = pos
    headers = 0
    while True:
        headers += 1
        if headers > MAX_MEMBERS:
            raise ManifestError(f"{where}: more than {MAX_MEMBERS} tar headers in one archive")
        block = read_block(BLOCK)
        if not block:
            return
        header = _parse_header(block, f"{where} at offset {pos}")
        if header is None:
            return
        data_offset = pos + BLOCK
        if header.type in (b"L", b"x", b"g", b"K"):
            if header.size > MAX_EXTENSION_BYTES:
                raise ManifestError(
                    f"{where}: tar extension header at offset {pos} declares {header.size} bytes, "
                    f"over {MAX_EXTENSION_BYTES}"
                )
            raw = read_block(_padded(header.size))[: header.size]
            if len(raw) < header.size:
                raise ManifestError(f"{where}: truncated tar extension header at offset {pos}")
            if header.type == b"L":
                long_name = _decode_name(raw.split(b"\0", 1)[0])
            elif header.type == b"x":
                pax = _pax_records(raw, where)
            pos = data_offset + _padded(header.size)
            continue
        name = pax.get("path") or long_name or header.name
        if header.type in _DATA_TYPES:
            size = _pax_size(pax, header.size, where)
            member = TarMember(check_member_name(name, where), member_start, data_offset, size)
            yield member, read_data(data_offset, size)
        elif header.type in _SKIP_TYPES:
            check_member_name(name, where)
            size = 0 if header.type in (b"1", b"2") else header.size  # links carry no data
            read_data(data_offset, size)
        else:
            raise ManifestError(f"{where}: unsupported tar member type {header.type!r} for {name!r}")
        long_name, pax = None, {}
        pos = member_start = data_offset + _padded(size)


class ChunkReader:
    """Exact-size reads over an iterator of byte chunks (bounded buffering)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only at the end of the stream)."""
        end = self._pos + n
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        parts = [self._buf[self._pos :]]
        have = len(parts[0])
        self._buf, self._pos = b"", 0
        for chunk in self._chunks:
            if have + len(chunk) >= n:
                take = n - have
                parts.append(chunk[:take])
                self._buf, self._pos = chunk, take
                return b"".join(parts)
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)


def iter_members(chunks: Iterable[bytes], where: str, start: int = 0) -> Iterator[tuple[TarMember, bytes]]:
    """Stream ``(member, data)`` from archive bytes given as chunks that begin at archive
    offset ``start``; one member's data is in memory at a time."""
    reader = ChunkReader(chunks)

    def read_data(offset: int, size: int) -> bytes:
        check_sample_size(size, f"{where}: tar member at offset {offset}")  # before reading it
        padded = _padded(size)
        data = reader.read(padded)
        if len(data) < size:
            raise ManifestError(f"{where}: tar member data truncated at offset {offset}")
        return data if padded == size else data[:size]

    return _walk(reader.read, read_data, start, where)


def group_samples(members: Iterable[tuple[TarMember, bytes]], where: str) -> Iterator[RawSample]:
    """Group consecutive members by WebDataset key into samples. Files whose basename
    has no extension belong to no sample; they are skipped and logged."""
    return _group_named(((member.name, data) for member, data in members), where, config.max_sample_bytes())


def _group_named(named: Iterable[tuple[str, bytes]], where: str, limit: int) -> Iterator[RawSample]:
    """:func:`group_samples` over ``(member name, data)`` pairs, each sample's bytes held
    to ``limit``."""
    key: str | None = None
    fields: dict[str, bytes] = {}
    total = 0
    for name, data in named:
        split = split_key(name)
        if split is None:
            log.warning("%s: tar member %r has no extension; not part of any sample", where, name)
            continue
        k, fname = split
        if k != key:
            if key is not None:
                yield RawSample(key, fields)
            key, fields, total = k, {}, 0
        if fname in fields:
            raise ManifestError(f"{where}: sample {k!r} has field {fname!r} twice")
        total += len(data)
        if total > limit:
            check_sample_size(total, f"{where}: sample {k!r}", limit)
        fields[fname] = data
    if key is not None:
        yield RawSample(key, fields)


def scan_index(read_range: Callable[[int, int], bytes], size: int, where: str) -> ShardIndex:
    """Build a :class:`ShardIndex` of an archive by reading only its headers (and the
    long-name/pax records), skipping every member's data."""
    state = {"pos": 0}

    def read_block(n: int) -> bytes:
        if state["pos"] >= size:
            return b""
        data = read_range(state["pos"], n)
        state["pos"] += len(data)
        return data

    def skip(offset: int, length: int) -> None:
        if offset + length > size:
            raise ManifestError(f"{where}: tar member at offset {offset} runs past the end ({size} bytes)")
        state["pos"] = offset + _padded(length)

    keys: list[str] = []
    offsets: list[int] = []
    end = 0
    for member, _ in _walk(read_block, skip, 0, where):
        split = split_key(member.name)
        if split is None:
            log.warning("%s: tar member %r has no extension; not part of any sample", where, member.name)
            continue
        if not keys or keys[-1] != split[0]:
            keys.append(split[0])
            offsets.append(member.offset)
        end = member.end
    # A last member whose final padding is missing still ends at the end of the bytes.
    offsets.append(min(end, size))
    return ShardIndex(keys, offsets)


# -- the fast path: plain members, headers checked a window at a time ----------------------
#
# Shards written by the exporter (and by webdataset's ShardWriter, tarfile, GNU tar for
# short names) hold only plain regular-file headers. For those, this walker reads each
# header with a few slices and checks the checksums of all headers of a window (one
# 256 KiB leaf, usually) in one numpy reduction, instead of one Python pass per header.
# Anything else (pax or long-name records, links, GNU base-256 numbers, a prefix field,
# names that need normalising or carry no extension, a checksum that does not match, a
# truncated end) hands the rest of the stream, from that header on, to the strict walker
# above: the same bounds, the same errors, the same results.

_PLAIN_TYPES = frozenset(b"0\x007")
_SUM_SKIP = np.zeros(BLOCK, dtype=np.int64)
_SUM_SKIP[148:156] = 1  # the checksum field itself counts as 8 spaces


def _plain_name(raw: bytes) -> str | None:
    """The member name when it is already normal (as :func:`check_member_name` returns
    it unchanged), else None (the strict walker decides)."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if (
        not name
        or name[0] in "/."
        or name[-1] == "/"
        or "\\" in name
        or "//" in name
        or "/." in name
        or name[1:2] == ":"
    ):
        return None
    return name


_POWERS = 8 ** np.arange(5, -1, -1, dtype=np.int64)


def _header_sums_ok(buf: bytes, heads: list[int]) -> int:
    """How many of the headers at ``heads`` (512-aligned offsets into ``buf``, in order)
    carry a correct unsigned checksum: all of them summed in one numpy pass. A checksum
    field not in the usual ``%06o\\0 `` form counts as wrong (the strict walker, which
    takes the other forms too, then reads from that header on)."""
    if len(heads) <= 4:  # one sample's headers: numpy's per-call cost is more than the sums
        for i, pos in enumerate(heads):
            text = buf[pos + 148 : pos + 154]
            usual = text.isdigit() and b"8" not in text and b"9" not in text
            if not (usual and buf[pos + 154] == 0 and buf[pos + 155] == 32):
                return i
            if int(text, 8) != sum(buf[pos : pos + 148]) + 256 + sum(buf[pos + 156 : pos + BLOCK]):
                return i
        return len(heads)
    blocks = np.frombuffer(buf, dtype=np.uint8, count=len(buf) // BLOCK * BLOCK).reshape(-1, BLOCK)
    rows = blocks[np.asarray(heads, dtype=np.int64) // BLOCK]
    computed = rows.sum(axis=1, dtype=np.int64) - rows[:, 148:156].sum(axis=1, dtype=np.int64) + 256
    digits = rows[:, 148:154].astype(np.int64) - 48
    usual = (digits >= 0).all(axis=1) & (digits <= 7).all(axis=1) & (rows[:, 154] == 0) & (rows[:, 155] == 32)
    stored = np.where(usual, digits @ _POWERS, -1)
    bad = np.flatnonzero(computed != stored)
    return int(bad[0]) if len(bad) else len(heads)


def iter_named_members(
    chunks: Iterable[bytes], where: str, start: int = 0, limit: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of the regular members in archive bytes given as chunks from
    archive offset ``start`` (what :func:`iter_members` yields, names only), plain
    headers on the fast path, anything else through :func:`iter_members`."""
    it = iter(chunks)
    base = start  # archive offset of the first pending byte
    if limit is None:
        limit = config.max_sample_bytes()
    headers = 0
    pending: list[bytes] = []
    have = 0
    need = BLOCK  # bytes wanted before the next pass: a header, or a member's whole data
    for chunk in it:
        pending.append(chunk)
        have += len(chunk)
        if have < need:
            continue  # joined once, not once per chunk: a large member costs one copy
        buf = pending[0] if len(pending) == 1 else b"".join(pending)
        n = len(buf)
        pos = 0
        heads: list[int] = []
        found: list[tuple[str, int, int]] = []
        odd = False  # met a header the fast path does not take
        need = BLOCK
        while pos + BLOCK <= n:
            if buf[pos + 156] not in _PLAIN_TYPES or buf[pos + 124] & 0x80:
                odd = True
                break
            if buf[pos + 257 : pos + 263] == b"ustar\x00" and buf[pos + 345]:
                odd = True  # a prefix field extends the name
                break
            text = buf[pos + 124 : pos + 136].split(b"\0", 1)[0].strip()
            try:
                size = int(text, 8) if text else 0
            except ValueError:
                odd = True
                break
            raw = buf[pos : pos + 100]
            nul = raw.find(0)
            name = _plain_name(raw if nul < 0 else raw[:nul])
            if name is None:
                odd = True
                break
            check_sample_size(size, f"{where}: tar member at offset {base + pos + BLOCK}", limit)
            end = pos + BLOCK + _padded(size)
            if end > n:
                need = end - pos  # its data continues in the next chunks
                break
            headers += 1
            if headers > MAX_MEMBERS:
                raise ManifestError(f"{where}: more than {MAX_MEMBERS} tar headers in one archive")
            heads.append(pos)
            found.append((name, pos + BLOCK, size))
            pos = end
        good = _header_sums_ok(buf, heads) if heads else 0
        for name, data_at, size in found[:good]:
            yield name, buf[data_at : data_at + size]
        if good < len(heads) or odd:
            stop = heads[good] if good < len(heads) else pos
            yield from _strict_rest(buf[stop:], it, where, base + stop)
            return
        rest = buf[pos:]
        pending, have = ([rest], len(rest)) if rest else ([], 0)
        base += pos
    if pending:  # a truncated member or end-of-archive blocks: the strict walker decides
        yield from _strict_rest(b"".join(pending), it, where, base)


def _strict_rest(head: bytes, rest: Iterator[bytes], where: str, offset: int) -> Iterator[tuple[str, bytes]]:
    chunks = itertools.chain([head], rest)
    for member, data in iter_members(chunks, where, offset):
        yield member.name, data


def samples_of(
    chunks: Iterable[bytes], where: str, start: int = 0, limit: int | None = None
) -> Iterator[RawSample]:
    """:func:`group_samples` of :func:`iter_members`, on the fast path for plain headers
    (``limit``: the per-sample byte limit, default :func:`config.max_sample_bytes`)."""
    if limit is None:
        limit = config.max_sample_bytes()
    return _group_named(iter_named_members(chunks, where, start, limit), where, limit)



# -- indexed spans: samples sliced out of chunks at the index's offsets --------------------
#
# A shard's index says where every sample starts. When a sample's members are plain
# headers that exactly tile its bytes [offsets[j], offsets[j + 1]), named "<its index
# key>.<field>" with no field twice, the strict walker would yield exactly that sample
# and then stand at offsets[j + 1] with no long-name or pax record pending. So the
# samples wholly inside one chunk are checked in one numpy pass (types, sizes,
# checksums, names against the keys) and sliced out of it; a sample split between two
# chunks is checked header by header. The first sample that does not fit (a pax or
# long-name record, a link, a checksum in another form or wrong, a name that is not its
# key, a sample over the byte limit, a truncated end...) hands the rest of the span, from
# that sample's first byte, to samples_of: the same samples, bounds and errors as
# walking the whole span strictly.

#: Below this many samples in a window, checking them one by one costs less than numpy.
_MIN_WINDOW = 12
#: Bytes gathered into one window (about 256 CIFAR-size samples) ...
_WINDOW_BYTES = 1 << 20
#: ... when samples average at most this many bytes (else a window is one chunk).
_JOIN_BELOW = 16 * 1024
_NAME = 100  # bytes of a header's name field
_DOT = 0x2E
_SIZE_WEIGHTS = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_SIZE_ZERO = 48 * int(_SIZE_WEIGHTS.sum())
#: The header bytes 120..159 as five little-endian 64-bit words, and what the fast path
#: requires of them (``word & mask == pattern``): size (11 octal digits, then NUL or
#: space), checksum (6 octal digits, NUL, space); mode, mtime and link name: anything.
#: The type byte (156: "0", NUL or "7") is checked on its own.
_FIELD_WORDS = slice(15, 20)
_FIELD_MASK = np.zeros(40, dtype=np.uint8)
_FIELD_PATTERN = np.zeros(40, dtype=np.uint8)
for _col in [*range(124, 135), *range(148, 154)]:
    _FIELD_MASK[_col - 120], _FIELD_PATTERN[_col - 120] = 0xF8, 0x30  # "0" .. "7"
_FIELD_MASK[135 - 120] = 0xDF  # NUL or space
_FIELD_MASK[154 - 120] = _FIELD_MASK[155 - 120] = 0xFF
_FIELD_PATTERN[155 - 120] = 0x20
_FIELD_MASK = _FIELD_MASK.view("<u8")
_FIELD_PATTERN = _FIELD_PATTERN.view("<u8")


def _fields_ok(heads: np.ndarray) -> bool:
    """Whether every header (row) has its size and checksum fields in the usual form
    and a regular-file type."""
    words = heads.view("<u8")[:, _FIELD_WORDS]
    if not bool(((words & _FIELD_MASK) == _FIELD_PATTERN).all()):
        return False
    types = heads[:, 156]
    return bool((types == 48).all()) or bool(((types == 48) | (types == 0) | (types == 55)).all())


_MAX_DIGITS = 18
_TENS = 10 ** np.arange(_MAX_DIGITS - 1, -1, -1, dtype=np.int64)
_LANES = np.uint64(0x00FF00FF00FF00FF)
_CHECKSUM_WEIGHTS = 8 ** np.arange(5, -1, -1, dtype=np.int64)


def _names_equal(heads: np.ndarray, expected: np.ndarray) -> bool:
    """``heads[:, :100] == expected``, compared 8 bytes at a time."""
    return bool(
        (heads[:, :96].view("<u8") == expected[:, :96].view("<u8")).all()
        and (heads[:, 96:_NAME] == expected[:, 96:]).all()
    )


def _checksums_ok(heads: np.ndarray) -> bool:
    """Whether every header (row) has its unsigned checksum in bytes 148..153, given
    that those are octal digits and 154..155 NUL and space (checked before). The byte
    sums are taken 4 lanes of 16 bits at a time in 64-bit words: no lane can overflow
    (64 words x 2 bytes x 255 < 2^16)."""
    words = heads.view(np.uint64)
    lanes = ((words & _LANES) + ((words >> np.uint64(8)) & _LANES)).sum(axis=1, dtype=np.uint64)
    total = (lanes & np.uint64(0xFFFF)) + ((lanes >> np.uint64(16)) & np.uint64(0xFFFF))
    total = total + ((lanes >> np.uint64(32)) & np.uint64(0xFFFF)) + (lanes >> np.uint64(48))
    digits = heads[:, 148:154].astype(np.int64)
    field = digits.sum(axis=1) + 32  # the 6 digits, NUL, space
    stored = (digits - 48) @ _CHECKSUM_WEIGHTS
    return bool(np.array_equal(total.astype(np.int64) - field + 256, stored))


_USTAR = np.frombuffer(b"ustar\x00", dtype=np.uint8)


def _octal_digits(raw: bytes) -> int:
    """The value of octal digits only, or -1."""
    if not raw.isdigit() or b"8" in raw or b"9" in raw:
        return -1
    return int(raw, 8)


def _byte_sum(head: bytes) -> int:
    if head.isascii():  # at most 512 * 127 < 65521: adler32's low half is 1 + the sum
        return (zlib.adler32(head) & 0xFFFF) - 1
    return sum(head)


def _plain_member(buf: Any, pos: int, key: bytes) -> tuple[bytes, int] | None:
    """``(field, size)`` of the header at ``buf[pos:]`` when it is a plain regular-file
    header (octal fields in the usual form, right checksum, no prefix) named
    ``<key>.<field>``; else None. What :meth:`_IndexedSpan.window` checks, for one header."""
    head = bytes(buf[pos : pos + BLOCK])
    if len(head) < BLOCK or head[156] not in _PLAIN_TYPES or head[135] not in (0, 32):
        return None
    if head[154] != 0 or head[155] != 32 or (head[345] and head[257:263] == b"ustar\x00"):
        return None
    size = _octal_digits(head[124:135])
    digits = head[148:154]
    stored = _octal_digits(digits)
    if size < 0 or stored != _byte_sum(head) - sum(digits) - 32 + 256:  # field: digits, NUL, space
        return None
    name = head[:_NAME]
    nul = name.find(0)
    if nul >= 0:
        name = name[:nul]
    n = len(key)
    if len(name) <= n + 1 or name[n] != _DOT or not name.startswith(key):
        return None
    return name[n + 1 :], size


def _field_ok(key: str, field: bytes) -> str | None:
    """The field name when ``<key>.<field>`` is a member name the strict walker takes
    unchanged and splits into exactly ``(key, field)``; else None."""
    try:
        fname = field.decode("utf-8")
    except UnicodeDecodeError:
        return None
    name = f"{key}.{fname}"
    if _plain_name(name.encode("utf-8")) is None or split_key(name) != (key, fname):
        return None
    return fname


def _key_ok(key: str) -> bool:
    """A key whose member names ``<key>.<field>`` can be plain (see :func:`_field_ok`)."""
    return _field_ok(key, b"x") is not None


class _IndexedSpan:
    """One :func:`iter_indexed` pass: the index's offsets and keys for the span, the
    field names last seen, the previous key (two neighbours with one key would be one
    sample to the strict walker)."""

    def __init__(
        self, where: str, index: Any, start: int, stop: int, fields: tuple[str, ...] | None, limit: int
    ) -> None:
        self.where = where
        self.index = index
        self.start = start
        self.n = stop - start
        self.fields = fields
        self.limit = limit
        self.offsets = np.asarray(index.offsets[start : stop + 1], dtype=np.int64)
        decimal: tuple[int, int] | None = getattr(index, "decimal_keys", None)
        if decimal is not None and not (0 < decimal[1] <= 18 and decimal[0] + stop <= 10 ** decimal[1]):
            decimal = None  # keys of one width that int64 holds, checked as numbers at once
        self.decimal = decimal
        self.prev_key: bytes | None = None
        self.headers = 0
        self.template: tuple[tuple[bytes, ...], tuple[str, ...]] | None = None

    def key(self, j: int) -> str:
        return str(self.index.keys[self.start + j])

    def key_bytes(self, j: int) -> bytes | None:
        """Sample ``j``'s key as UTF-8, or None when it cannot start a plain name."""
        if self.decimal is not None:
            base, width = self.decimal
            return b"%0*d" % (width, base + self.start + j)
        key = self.key(j)
        return key.encode("utf-8") if _key_ok(key) else None

    def count_headers(self, n: int) -> None:
        self.headers += n
        if self.headers > MAX_MEMBERS:
            raise ManifestError(f"{self.where}: more than {MAX_MEMBERS} tar headers in one archive")

    def names_of(self, key: str, raw_fields: tuple[bytes, ...]) -> tuple[str, ...] | None:
        """The field names of a sample whose members are ``<key>.<raw field>`` (checked
        once per distinct tuple of fields), or None."""
        template = self.template
        if template is not None and template[0] == raw_fields:
            return template[1]
        if len(set(raw_fields)) != len(raw_fields):
            return None  # a field twice: the strict walker says so
        names = tuple(_field_ok(key, f) for f in raw_fields)
        if any(n is None for n in names):
            return None
        found: tuple[str, ...] = names  # type: ignore[assignment]
        self.template = (raw_fields, found)
        return found

    def shape(self, j: int, names: tuple[str, ...], values: list[bytes]) -> Any:
        fields = self.fields
        if fields is not None and len(fields) == len(names) and set(fields) == set(names):
            return tuple(values) if names == fields else tuple(values[names.index(f)] for f in fields)
        return RawSample(self.key(j), dict(zip(names, values)))

    # -- one sample, header by header

    def members(self, buf: Any, pos: int, end: int, key: bytes) -> list[tuple[bytes, int, int]] | None:
        """``(field, data offset, size)`` of plain members named ``<key>.<field>`` tiling
        ``buf[pos:end]`` exactly, or None."""
        out: list[tuple[bytes, int, int]] = []
        while pos < end:
            found = _plain_member(buf, pos, key)
            if found is None:
                return None
            fname, size = found
            nxt = pos + BLOCK + _padded(size)
            if nxt > end:
                return None
            out.append((fname, pos + BLOCK, size))
            pos = nxt
        return out if out else None

    def one(self, buf: Any, base: int, j: int) -> Any:
        """Sample ``j`` out of ``buf`` (archive bytes from offset ``base``), or None."""
        key = self.key_bytes(j)
        if key is None or key == self.prev_key:
            return None
        members = self.members(buf, int(self.offsets[j]) - base, int(self.offsets[j + 1]) - base, key)
        if members is None:
            return None
        names = self.names_of(key.decode("utf-8"), tuple(f for f, _, _ in members))
        if names is None:
            return None
        self.count_headers(len(members))
        self.prev_key = key
        return self.shape(j, names, [bytes(buf[a : a + size]) for _, a, size in members])

    # -- the samples wholly inside one chunk, in one numpy pass

    def window(self, buf: bytes, base: int, j0: int, j1: int) -> list[Any] | None:
        """Samples ``j0 .. j1-1`` (inside ``buf``, archive bytes from offset ``base``)
        when every one passes the checks, else None (the caller goes one by one)."""
        n = j1 - j0
        key0 = self.key_bytes(j0)
        if key0 is None or key0 == self.prev_key:
            return None
        # The first sample names the fields (in order) every other one must have.
        skip = -base % BLOCK  # buf[skip:] starts on an archive block
        offs = self.offsets[j0 : j1 + 1] - (base + skip)
        first = self.members(buf, int(offs[0]) + skip, int(offs[1]) + skip, key0)
        if first is None:
            return None
        raw_fields = tuple(f for f, _, _ in first)
        names = self.names_of(key0.decode("utf-8"), raw_fields)
        if names is None:
            return None
        k = len(raw_fields)
        blocks = np.frombuffer(buf, dtype=np.uint8, offset=skip, count=(len(buf) - skip) // BLOCK * BLOCK)
        blocks = blocks.reshape(-1, BLOCK)
        last_row = len(blocks) - 1
        pos = offs[:-1]
        at = []
        for _ in range(k):  # where each member is follows from the sizes before it
            at.append(pos)
            size = blocks[np.clip(pos >> 9, 0, last_row), 124:135] @ _SIZE_WEIGHTS - _SIZE_ZERO
            pos = pos + BLOCK + ((size + (BLOCK - 1)) & -BLOCK)
        # A sample whose members do not end exactly at the next sample's offset (too few,
        # too many, a size too large) fails here. Sizes read from bytes that are not
        # octal digits are garbage (even negative) until the checks below refuse them.
        if not np.array_equal(pos, offs[1:]):
            return None
        where = np.concatenate(at) if k > 1 else at[0]
        if int(where.min()) < 0 or int(where.max()) > last_row * BLOCK:
            return None
        heads = blocks[where >> 9]  # header s of sample i is row s * n + i
        if not (
            _fields_ok(heads)  # octal digits, terminators, type
            and _checksums_ok(heads)
            and self.names_match(heads, raw_fields, j0, j1)
        ):
            return None
        prefixed = heads[:, 345] != 0
        if prefixed.any() and bool(((heads[:, 257:263] == _USTAR).all(axis=1) & prefixed).any()):
            return None
        self.count_headers(n * k)
        self.prev_key = self.key_bytes(j1 - 1)
        sizes = (heads[:, 124:135] @ _SIZE_WEIGHTS - _SIZE_ZERO).tolist()
        starts = (where + (BLOCK + skip)).tolist()
        columns = [
            [buf[a : a + size] for a, size in zip(starts[s * n : (s + 1) * n], sizes[s * n : (s + 1) * n])]
            for s in range(k)
        ]
        fields = self.fields
        if fields is not None and len(fields) == k and set(fields) == set(names):
            if names != fields:
                columns = [columns[names.index(f)] for f in fields]
            return list(zip(*columns))
        keys = [self.key(j) for j in range(j0, j1)]
        return [RawSample(key, dict(zip(names, values))) for key, values in zip(keys, zip(*columns))]

    def names_match(self, heads: np.ndarray, raw_fields: tuple[bytes, ...], j0: int, j1: int) -> bool:
        """Whether header ``s * n + i`` is named ``<key of sample j0 + i>.<raw_fields[s]>``
        (then NULs to the end of the name field)."""
        n = j1 - j0
        k = len(raw_fields)
        expected = np.empty((k * n, _NAME), dtype=np.uint8)
        if self.decimal is not None:
            base, width = self.decimal
            numbers = np.arange(base + self.start + j0, base + self.start + j1, dtype=np.int64)
            digits = (numbers[:, None] // _TENS[_MAX_DIGITS - width :]) % 10 + 48
            for s, fname in enumerate(raw_fields):
                tail = (b"." + fname).ljust(_NAME - width, b"\0")
                if len(tail) != _NAME - width:
                    return False
                rows = expected[s * n : (s + 1) * n]
                rows[:, :width] = digits
                rows[:, width:] = np.frombuffer(tail, dtype=np.uint8)
            return _names_equal(heads, expected)
        keys = [self.key_bytes(j) for j in range(j0, j1)]
        if any(key is None for key in keys):
            return False
        encoded: list[bytes] = keys  # type: ignore[assignment]
        if any(a == b for a, b in zip(encoded, encoded[1:])):
            return False
        for s, fname in enumerate(raw_fields):
            names = [key + b"." + fname for key in encoded]
            if any(len(name) > _NAME for name in names):
                return False
            flat = b"".join(name.ljust(_NAME, b"\0") for name in names)
            expected[s * n : (s + 1) * n] = np.frombuffer(flat, dtype=np.uint8).reshape(n, _NAME)
        return _names_equal(heads, expected)

    def samples(self, buf: bytes, base: int, j0: int, j1: int) -> list[Any]:
        """Samples ``j0 .. j1-1`` out of ``buf`` (archive bytes from offset ``base``), as
        far as they pass the checks: all of them, or those before the first that did not."""
        found = self.window(buf, base, j0, j1) if j1 - j0 >= _MIN_WINDOW else None
        if found is not None:
            return found
        out = []
        for j in range(j0, j1):  # few samples, or ones that vary: one by one
            sample = self.one(buf, base, j)
            if sample is None:
                break
            out.append(sample)
        return out

    # -- the strict rest

    def strict(self, j: int, head: list[Any], rest: Iterator[bytes]) -> Iterator[Any]:
        """Samples ``j ..`` by :func:`samples_of` over ``head`` (archive bytes from
        sample ``j``'s offset) and the remaining chunks, each checked against the index."""
        chunks = itertools.chain((bytes(p) for p in head), rest)
        count = j
        fields = self.fields
        for sample in samples_of(chunks, self.where, int(self.offsets[j]), self.limit):
            want = self.key(count) if count < self.n else None
            if sample.key != want:
                raise ManifestError(
                    f"{self.where}: index expects sample {want!r}, the shard has {sample.key!r}"
                )
            count += 1
            got = sample.fields
            if fields is not None and len(fields) == len(got) and all(f in got for f in fields):
                yield tuple(got[f] for f in fields)
            else:
                yield sample
        if count != self.n:
            raise ManifestError(f"{self.where}: expected {self.n} samples from {self.start}, read {count}")


def iter_indexed(
    chunks: Iterable[bytes],
    where: str,
    index: Any,
    start: int,
    stop: int,
    fields: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> Iterator[Any]:
    """Samples ``start .. stop-1`` of an indexed archive from ``chunks``, its bytes
    ``[index.offsets[start], index.offsets[stop])``; ``index`` has ``offsets`` and
    ``keys`` (a :class:`ShardIndex` or :class:`~torch_ipfs.formats.shardindex.PackedIndex`).

    Yields what walking those bytes strictly yields (:func:`samples_of`, each sample's
    key checked against the index: :class:`ManifestError` naming ``where`` and the key
    otherwise), as :class:`RawSample` s, except that a sample whose field names are
    exactly ``fields`` comes as the tuple of its fields' bytes in that order. Most
    samples are sliced out of the chunks (see the comment above).
    """
    if limit is None:
        limit = config.max_sample_bytes()
    if stop <= start:
        return
    span = _IndexedSpan(where, index, start, stop, fields, limit)
    offsets = span.offsets
    n = span.n
    sizes = np.diff(offsets)
    # Left to the strict walker from the first of them: samples over the byte limit (it
    # streams them, bounded), too short to hold a header, or off the 512-byte grid.
    odd = np.flatnonzero((sizes > limit) | (sizes < BLOCK) | (offsets[:-1] % BLOCK != 0))
    fast_end = int(odd[0]) if len(odd) else n
    ends = offsets.tolist()
    # Small samples: a window gathers about a MiB of chunks, joined (one copy, against
    # numpy's fixed cost per pass). Large ones: each chunk is a window of its own, and
    # only a sample split between chunks is copied out of them.
    target = _WINDOW_BYTES if ends[-1] - ends[0] <= n * _JOIN_BELOW else 0
    # The first window is the first chunk alone: the first samples go out as soon as one
    # block is in, not after a MiB of them (the rest arrive meanwhile).
    need = 1 if target else 0
    it = iter(chunks)
    j = 0  # the next sample to check
    base = ends[0]  # archive offset of pending[0]
    pending: list[Any] = []
    have = 0
    # The last checked sample is held back until the next one passes too: were the next
    # sample's first member named with its key, the strict walker would have made them
    # one sample. ``held_bytes``: its bytes, for the strict walker to start from then.
    held: Any = None
    held_bytes: Any = None
    more = True
    while more:
        chunk = next(it, None)
        if chunk is not None:
            pending.append(chunk)
            have += len(chunk)
            if j >= fast_end:
                break
            if have < need or base + have < ends[j + 1]:
                continue  # a window: at least `need` bytes, and at least one whole sample
        more = chunk is not None
        if target or len(pending) == 1 or chunk is None:
            buf = pending[0] if len(pending) == 1 else b"".join(pending)
            at = base
        else:  # sample j began in earlier chunks and ends in this one
            at = base + have - len(chunk)
            joined = b"".join([*pending[:-1], memoryview(chunk)[: ends[j + 1] - at]])
            found = span.samples(joined, base, j, j + 1)
            if not found:
                break
            if held is not None:
                yield held
            held, held_bytes = found[0], memoryview(joined)
            j += 1
            buf = chunk
            pending = [chunk]
        m = min(int(np.searchsorted(offsets, at + len(buf), side="right")) - 1, fast_end)
        if m > j:
            found = span.samples(buf, at, j, m)
            if found:
                if held is not None:
                    yield held
                yield from found[:-1] if len(found) > 1 else ()
                j += len(found)
                held, held_bytes = found[-1], memoryview(buf)[ends[j - 1] - at : ends[j] - at]
            if j < m:  # sample j failed a check
                pending = [memoryview(buf)[ends[j] - at :]]
                break
        need = target
        tail = ends[j] - at
        pending = [memoryview(buf)[tail:]] if tail < len(buf) else []
        have = len(buf) - tail
        base = ends[j]
    if j < n:  # odd samples, or the bytes ended early: the strict walker decides
        if held is not None:  # from the held sample on (see above)
            yield from span.strict(j - 1, [held_bytes, *pending], it)
        else:
            yield from span.strict(j, pending, it)
    elif held is not None:
        yield held
