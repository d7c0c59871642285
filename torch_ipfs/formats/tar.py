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


def _header(name: str, size: int) -> bytes:
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
