"""The shard table of manifest v2: which runs of which tar shards make the dataset.

A dataset is a sequence of *pieces*; a piece is a run ``[start, start + count)`` of the
samples of one *file* (a tar shard with its index file, see
:mod:`torch_ipfs.formats.shardindex`). An exported dataset has one piece per file
covering all of it; :func:`torch_ipfs.compose.concat` repeats pieces and
:func:`torch_ipfs.compose.subset` cuts them, without touching the shards. Each distinct
file is listed once however often pieces refer to it, so a billion samples made of one
10,000-sample export concatenated 100,000 times is a table of ~2.4 MB.

Byte layout (little-endian; the table with offsets is in ``docs/layouts.md``)::

    header   32 bytes: magic b"TIPFSST\\0", version u32 (1), reserved u32,
             files u64, pieces u64
    files    56 bytes each: tar bytes u64, samples u64, index bytes u64, index SHA-256 (32)
    pieces   24 bytes each: file u32, reserved u32, start u64, count u64
    CIDs     2 * files + 1 offsets u32 into the CID bytes that follow (binary CIDs:
             file f's tar at [2f, 2f+1), its index at [2f+1, 2f+2))

Parsing maps the arrays in place (numpy views): no per-piece Python objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from torch_ipfs.cid import CID
from torch_ipfs.errors import InvalidCIDError, ManifestError
from torch_ipfs.formats.shardindex import read_header

__all__ = ["TABLE_MAGIC", "ShardFile", "ShardTable", "encode_table"]

TABLE_MAGIC = b"TIPFSST\x00"
TABLE_VERSION = 1
_HEADER = np.dtype(
    [("magic", "S8"), ("version", "<u4"), ("reserved", "<u4"), ("files", "<u8"), ("pieces", "<u8")]
)
FILE_DTYPE = np.dtype(
    [("tar_bytes", "<u8"), ("samples", "<u8"), ("index_bytes", "<u8"), ("index_sha256", "S32")]
)
PIECE_DTYPE = np.dtype([("file", "<u4"), ("reserved", "<u4"), ("start", "<u8"), ("count", "<u8")])
HEADER_BYTES = _HEADER.itemsize  # 32
#: More files or pieces than this are refused before anything is allocated.
MAX_ENTRIES = 1 << 31
#: A file of more samples than this is refused (as a shard index is), so sums cannot overflow.
MAX_FILE_SAMPLES = 1 << 40


@dataclass(frozen=True)
class ShardFile:
    """One tar shard and its index file, as the table lists it."""

    tar_cid: CID
    index_cid: CID
    tar_bytes: int
    samples: int
    index_bytes: int
    index_sha256: bytes


def encode_table(files: Sequence[ShardFile], pieces: Any) -> bytes:
    """The table's bytes. ``pieces`` is a sequence of ``(file, start, count)`` or a numpy
    array of :data:`PIECE_DTYPE`; every piece must lie inside its file."""
    header = np.zeros(1, _HEADER)
    header["magic"], header["version"] = TABLE_MAGIC, TABLE_VERSION
    file_rows = np.zeros(len(files), FILE_DTYPE)
    cids: list[bytes] = []
    for i, f in enumerate(files):
        if len(f.index_sha256) != 32:
            raise ValueError(f"file {i}: index_sha256 must be 32 bytes")
        file_rows[i] = (f.tar_bytes, f.samples, f.index_bytes, f.index_sha256)
        cids += [f.tar_cid.to_bytes(), f.index_cid.to_bytes()]
    if isinstance(pieces, np.ndarray) and pieces.dtype == PIECE_DTYPE:
        rows = pieces
    else:
        rows = np.zeros(len(pieces), PIECE_DTYPE)
        for i, (file, start, count) in enumerate(pieces):
            rows[i] = (file, 0, start, count)
    if len(rows):
        if int(rows["file"].max()) >= len(files):
            raise ValueError("a piece refers to a file the table does not list")
        if bool(np.any(rows["start"] + rows["count"] > file_rows["samples"][rows["file"]])):
            raise ValueError("a piece runs past the end of its file")
    header["files"], header["pieces"] = len(files), len(rows)
    cid_offsets = np.zeros(len(cids) + 1, dtype="<u4")
    np.cumsum([len(c) for c in cids], out=cid_offsets[1:])
    return b"".join(
        [header.tobytes(), file_rows.tobytes(), rows.astype(PIECE_DTYPE).tobytes(), cid_offsets.tobytes()]
        + cids
    )


class ShardTable:
    """A parsed shard table over its bytes (a memory map or bytes): arrays, checked.

    Raises :class:`ManifestError` naming ``where`` and the entry at fault for a bad
    magic, version or size, a piece naming a missing file or running past its file, or
    (``total_samples``) counts that do not add up.
    """

    def __init__(self, data: Any, where: str, *, total_samples: int | None = None) -> None:
        self.where = where
        buf, header = read_header(data, _HEADER, TABLE_MAGIC, TABLE_VERSION, "shard table", where)
        n_files, n_pieces = int(header["files"]), int(header["pieces"])
        if n_files > MAX_ENTRIES or n_pieces > MAX_ENTRIES:
            raise ManifestError(f"{where}: shard table declares {n_files} files and {n_pieces} pieces")
        files_end = HEADER_BYTES + n_files * FILE_DTYPE.itemsize
        pieces_end = files_end + n_pieces * PIECE_DTYPE.itemsize
        cids_end = pieces_end + 4 * (2 * n_files + 1)
        if cids_end > len(buf):
            raise ManifestError(
                f"{where}: shard table of {n_files} files and {n_pieces} pieces is cut off "
                f"({len(buf)} bytes, needs more than {cids_end})"
            )
        self.files = buf[HEADER_BYTES:files_end].view(FILE_DTYPE)
        self.pieces = buf[files_end:pieces_end].view(PIECE_DTYPE)
        self._cid_offsets = buf[pieces_end:cids_end].view("<u4")
        self._cid_bytes = buf[cids_end:]
        co = self._cid_offsets
        if int(co[0]) != 0 or int(co[-1]) != len(self._cid_bytes) or bool(np.any(co[1:] < co[:-1])):
            raise ManifestError(f"{where}: shard table CID offsets do not match its CID bytes")
        self._check_pieces()
        #: samples of each piece (int64), and where each piece starts in the dataset
        self.counts = self.pieces["count"].astype(np.int64)
        self.ends = np.cumsum(self.counts)
        self.total = int(self.ends[-1]) if len(self.ends) else 0
        if total_samples is not None and self.total != total_samples:
            raise ManifestError(
                f"{where}: total_samples {total_samples} but the shard table's pieces hold {self.total}"
            )

    def _check_pieces(self) -> None:
        bad = np.nonzero(self.files["samples"] >= MAX_FILE_SAMPLES)[0]
        if len(bad):
            f = int(bad[0])
            raise ManifestError(f"{self.where}: file {f} declares {int(self.files['samples'][f])} samples")
        if not len(self.pieces):
            return
        bad = np.nonzero(self.pieces["file"] >= len(self.files))[0]
        if len(bad):
            p = int(bad[0])
            raise ManifestError(
                f"{self.where}: piece {p} names file {int(self.pieces['file'][p])}, "
                f"the table lists {len(self.files)}"
            )
        samples = self.files["samples"][self.pieces["file"]]
        # start + count compared without overflow: count <= samples and start <= samples - count
        over = (self.pieces["count"] > samples) | (self.pieces["start"] > samples - np.minimum(
            samples, self.pieces["count"]))  # fmt: skip
        bad = np.nonzero(over)[0]
        if len(bad):
            p = int(bad[0])
            row = self.pieces[p]
            raise ManifestError(
                f"{self.where}: piece {p} covers samples {int(row['start'])}..+{int(row['count'])} "
                f"of file {int(row['file'])}, which has {int(samples[p])}"
            )

    def __len__(self) -> int:
        """Number of pieces (the dataset's shards)."""
        return len(self.pieces)

    def starts(self) -> Any:
        """Global index of each piece's first sample (int64 array)."""
        return self.ends - self.counts

    def locate(self, index: int) -> int:
        """The piece holding global sample ``index`` (``0 <= index < total``)."""
        return int(np.searchsorted(self.ends, index, side="right"))

    def cid(self, file: int, which: int) -> CID:
        """CID of file ``file``'s tar (``which=0``) or index (``which=1``)."""
        k = 2 * file + which
        raw = self._cid_bytes[int(self._cid_offsets[k]) : int(self._cid_offsets[k + 1])].tobytes()
        try:
            return CID.decode(raw)
        except (InvalidCIDError, ValueError) as e:
            what = "index" if which else "tar"
            raise ManifestError(f"{self.where}: file {file}: bad {what} CID ({e})") from None

    def file_entry(self, file: int) -> ShardFile:
        row = self.files[file]
        return ShardFile(
            self.cid(file, 0),
            self.cid(file, 1),
            int(row["tar_bytes"]),
            int(row["samples"]),
            int(row["index_bytes"]),
            bytes(row["index_sha256"]).ljust(32, b"\x00"),
        )
