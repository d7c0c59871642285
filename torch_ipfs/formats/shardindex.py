"""The per-shard sample index of manifest v2: a small binary file per tar shard.

It says where each sample of one tar shard is (byte offsets) and what its key is, so
``ds[i]`` can fetch one sample's byte range. Byte layout (little-endian; the exact table
is in ``docs/layouts.md``)::

    0   8   magic b"TIPFSIX\\0"
    8   4   version (1)
    12  4   key mode: 0 = decimal keys, 1 = stored keys
    16  8   n, the number of samples
    24  8   key base (mode 0: sample j's key is the decimal of base + j ...)
    32  4   key width (... zero-padded to this many digits, as ``f"{base + j:0{width}d}"``)
    36  4   reserved (0)
    40      offsets: n + 1 unsigned 64-bit ints; sample j is bytes [offsets[j], offsets[j+1])
            mode 1 only: n + 1 unsigned 32-bit key offsets, then the UTF-8 key bytes

Readers map the file (:class:`numpy.memmap` over a verified local copy, see
:class:`MappedFiles`), so every process of a host shares one copy through the page cache
and no per-sample Python objects are made.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from torch_ipfs.errors import ManifestError

__all__ = ["INDEX_MAGIC", "MappedFiles", "PackedIndex", "encode_index", "read_header"]

log = logging.getLogger(__name__)

INDEX_MAGIC = b"TIPFSIX\x00"
INDEX_VERSION = 1
_HEADER = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u4"),
        ("key_mode", "<u4"),
        ("n", "<u8"),
        ("key_base", "<u8"),
        ("key_width", "<u4"),
        ("reserved", "<u4"),
    ]
)
HEADER_BYTES = _HEADER.itemsize  # 40
KEYS_DECIMAL, KEYS_STORED = 0, 1
#: Longest key width mode 0 describes (a u64 has 20 digits).
_MAX_WIDTH = 20


def read_header(
    data: Any, dtype: np.dtype, magic: bytes, version: int, what: str, where: str
) -> tuple[Any, Any]:
    """``(bytes as a uint8 array, header record)`` of a binary file of ours starting with
    a ``dtype`` header of ``magic`` and ``version`` fields (a shard index or table);
    :class:`ManifestError` naming ``where`` if it is too short, or another file, or
    another version."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) < dtype.itemsize:
        raise ManifestError(f"{where}: {what} is {len(buf)} bytes, shorter than its header")
    header = buf[: dtype.itemsize].view(dtype)[0]
    if bytes(header["magic"]) != magic.rstrip(b"\x00"):
        raise ManifestError(f"{where}: not a torch_ipfs {what} (bad magic)")
    if int(header["version"]) != version:
        raise ManifestError(f"{where}: {what} version {int(header['version'])} is not supported")
    return buf, header


def _decimal_keys(keys: Sequence[str]) -> tuple[int, int] | None:
    """``(base, width)`` when ``keys[j] == f"{base + j:0{width}d}"`` for every j, else None."""
    if not keys or not keys[0].isdigit() or not keys[0].isascii() or len(keys[0]) > _MAX_WIDTH:
        return None
    first = keys[0]
    base = int(first)
    width = len(first)
    if base + len(keys) >= 1 << 64:
        return None
    for j, key in enumerate(keys):
        if key != f"{base + j:0{width}d}":
            return None
    return base, width


def encode_index(keys: Sequence[str], offsets: Sequence[int]) -> bytes:
    """The index file of one shard (sample ``j``: key ``keys[j]``, bytes
    ``[offsets[j], offsets[j + 1])``). Keys that count up in decimal (the exporter's) take
    no space; others are stored. The same input gives the same bytes."""
    n = len(keys)
    if len(offsets) != n + 1:
        raise ValueError(f"{n} keys need {n + 1} offsets, got {len(offsets)}")
    header = np.zeros(1, _HEADER)
    header["magic"] = INDEX_MAGIC
    header["version"] = INDEX_VERSION
    header["n"] = n
    decimal = _decimal_keys(keys)
    parts = [b"", np.asarray(offsets, dtype="<u8").tobytes()]
    if decimal is not None:
        header["key_mode"] = KEYS_DECIMAL
        header["key_base"], header["key_width"] = decimal
    else:
        header["key_mode"] = KEYS_STORED
        encoded = [k.encode("utf-8") for k in keys]
        key_offsets = np.zeros(n + 1, dtype="<u8")
        np.cumsum([len(k) for k in encoded], out=key_offsets[1:])
        if key_offsets[-1] >= 1 << 32:
            raise ValueError("the keys of one shard exceed 4 GiB")
        parts += [key_offsets.astype("<u4").tobytes(), b"".join(encoded)]
    parts[0] = header.tobytes()
    return b"".join(parts)


class _Keys(Sequence[str]):
    """The keys of a :class:`PackedIndex`, made one at a time on access."""

    def __init__(self, index: PackedIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._index.key(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"key {i} out of range for {n} samples")
        return self._index.key(i)


class PackedIndex:
    """One shard's index read from its binary file (see the module docstring), with the
    interface of :class:`torch_ipfs.formats.tar.ShardIndex`: ``len``, ``span``, ``keys``.

    ``data`` is the file's bytes (usually a read-only memory map). Construction checks the
    header, the sizes and that offsets never decrease, raising :class:`ManifestError`
    naming ``where``; ``tar_bytes`` (the shard's size) bounds the last offset.
    """

    def __init__(self, data: Any, where: str, *, tar_bytes: int | None = None) -> None:
        self.where = where
        buf, header = read_header(data, _HEADER, INDEX_MAGIC, INDEX_VERSION, "shard index", where)
        n = int(header["n"])
        mode = int(header["key_mode"])
        off_end = HEADER_BYTES + 8 * (n + 1)
        if n >= 1 << 40 or off_end > len(buf):
            raise ManifestError(f"{where}: index declares {n} samples but holds {len(buf)} bytes")
        self._n = n
        self.offsets = buf[HEADER_BYTES:off_end].view("<u8")
        if n and bool(np.any(self.offsets[1:] < self.offsets[:-1])):
            raise ManifestError(f"{where}: index offsets decrease")
        if tar_bytes is not None and int(self.offsets[-1]) > tar_bytes:
            raise ManifestError(f"{where}: index offsets run past the shard size {tar_bytes}")
        self._mode = mode
        if mode == KEYS_DECIMAL:
            self._base, self._width = int(header["key_base"]), int(header["key_width"])
            if self._width > _MAX_WIDTH or len(buf) != off_end:
                raise ManifestError(f"{where}: malformed decimal-key index")
        elif mode == KEYS_STORED:
            key_end = off_end + 4 * (n + 1)
            if key_end > len(buf):
                raise ManifestError(f"{where}: index is cut off inside its key offsets")
            self._key_offsets = buf[off_end:key_end].view("<u4")
            self._key_bytes = buf[key_end:]
            ko = self._key_offsets
            if int(ko[0]) != 0 or int(ko[-1]) != len(self._key_bytes) or bool(np.any(ko[1:] < ko[:-1])):
                raise ManifestError(f"{where}: index key offsets do not match its key bytes")
        else:
            raise ManifestError(f"{where}: unknown key mode {mode}")

    def __len__(self) -> int:
        return self._n

    @property
    def decimal_keys(self) -> tuple[int, int] | None:
        """``(base, width)`` when key ``j`` is ``base + j`` in ``width`` zero-padded
        decimal digits (keys derived, not stored); None for stored keys."""
        return (self._base, self._width) if self._mode == KEYS_DECIMAL else None

    def key(self, j: int) -> str:
        """The key of sample ``j`` (``0 <= j < len``)."""
        if self._mode == KEYS_DECIMAL:
            return f"{self._base + j:0{self._width}d}"
        raw = self._key_bytes[int(self._key_offsets[j]) : int(self._key_offsets[j + 1])]
        try:
            return raw.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{self.where}: key of sample {j} is not UTF-8") from None

    @property
    def keys(self) -> Sequence[str]:
        return _Keys(self)

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """``(offset, length)`` of samples ``start .. stop-1``."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return a, b - a


# -- verified local copies, mapped -----------------------------------------------------------


class MappedFiles:
    """Small content-addressed files (shard tables, shard indexes) kept on local disk and
    memory-mapped, so every process of a host reads one copy through the page cache.

    A file is fetched (through the client: every block verified against its CID) the
    first time it is needed, checked against the SHA-256 the verified manifest or shard
    table records for it, and written with temp file + rename under ``directory``
    (``<home>/indexes`` by default). A later process maps the file after checking its
    size and SHA-256 again (a damaged copy is fetched anew). Where the directory cannot
    be written, the verified bytes are kept in memory instead.
    """

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def get(self, name: str, size: int, sha256: bytes, fetch: Any, where: str) -> Any:
        """The bytes of file ``name`` (its CID), as a read-only array; ``fetch()`` returns
        them verified when there is no good local copy."""
        path = self.directory / name if self.directory is not None else None
        if path is not None and path.is_file():
            if path.stat().st_size == size and _sha256_of_file(path) == sha256:
                return _map(path, size)
            log.warning("%s: local copy %s is damaged; fetching it again", where, path)
        data = fetch()
        if len(data) != size:
            raise ManifestError(f"{where}: the file is {len(data)} bytes, the manifest says {size}")
        if hashlib.sha256(data).digest() != sha256:
            raise ManifestError(f"{where}: SHA-256 of the file does not match the manifest")
        if path is not None:
            try:
                _write_atomic(path, data)
                return _map(path, size)
            except OSError as e:  # read-only home: keep the verified bytes in memory
                log.debug("cannot keep %s on disk (%s); using memory", path, e)
        return np.frombuffer(data, dtype=np.uint8)


def _map(path: Path, size: int) -> Any:
    if size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))


def _sha256_of_file(path: Path) -> bytes:
    # read(), not the map: checking must not pull the whole file into this process's RSS
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
