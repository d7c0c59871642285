"""Datasets made of other datasets, by CID, without copying a byte of their shards.

::

    big = torch_ipfs.concat([cid_a, cid_b, cid_a])          # a, then b, then a again
    val = torch_ipfs.subset(big, [range(0, 1000), 5000])    # samples 0..999 and 5000
    mixed = torch_ipfs.mix([cid_a, cid_b], [0.7, 0.3])      # streaming: 70 % a, 30 % b

Each writes one new root in the manifest-v2 form of :mod:`torch_ipfs.formats.tarshards`:
``manifest.json`` and a binary shard table whose pieces point at the existing tar shards
and index files by CID, plus ``parts/`` linking the input roots (so pinning, garbage
collection and CAR export of the new root keep what it reads). Content addressing makes
the shared shards free; the same inputs give the same CID.

Inputs are roots of ``torch_ipfs.tarshards`` datasets (what :func:`torch_ipfs.export`
writes, v1 or v2; for v1 roots the per-shard index files are written once, small). All
inputs must have the same sample schema (fields, structure, label, classes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torch_ipfs.cid import CID, parse_address
from torch_ipfs.errors import ManifestError
from torch_ipfs.exporter import directory_node
from torch_ipfs.formats import tarshards
from torch_ipfs.formats.base import ClientHandle
from torch_ipfs.formats.detect import MANIFEST, open_layout
from torch_ipfs.formats.shardindex import encode_index
from torch_ipfs.formats.shardtable import PIECE_DTYPE, ShardFile, encode_table
from torch_ipfs.unixfs.builder import Built
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes

__all__ = ["concat", "mix", "subset"]

PARTS_DIR = "parts"


@dataclass
class _Source:
    """One input root read for composing: its files (deduplicated) and pieces."""

    cid: CID
    files: list[ShardFile]
    pieces: Any  # numpy array of PIECE_DTYPE, file numbers local to ``files``
    schema: dict[str, Any]
    class_counts: dict[str, int] | None
    new_indexes: list[tuple[str, Built]] = field(default_factory=list)  # written for v1 roots


def _schema_of(layout: tarshards.TarShardsLayout) -> dict[str, Any]:
    schema = layout.schema
    return {
        "fields": dict(schema.types),
        "structure": schema.structure,
        "keys": dict(schema.keys) or None,
        "label_field": schema.label_field,
        "classes": list(schema.classes) if schema.classes is not None else None,
    }


def _read_source(root: Any, client: Any, store: Any, options: ImportOptions) -> _Source:
    address = parse_address(root)
    cid = client.resolve(address)
    layout = open_layout(str(cid), ClientHandle(client))
    if not isinstance(layout, tarshards.TarShardsLayout) or (
        type(layout) is tarshards.TarShardsLayout and layout.schema.with_key
    ):
        raise ManifestError(
            f"{root}: composing needs torch_ipfs.tarshards datasets (torch_ipfs.export writes them); "
            f"this root is read as {layout.name}"
        )
    counts = layout.meta.get("class_counts")
    if isinstance(layout, tarshards.PackedTarShardsLayout):
        table = layout.table
        files = [table.file_entry(f) for f in range(len(table.files))]
        pieces = np.array(table.pieces, dtype=PIECE_DTYPE)
        return _Source(cid, files, pieces, _schema_of(layout), counts)
    # v1: every shard gets an index file, written now (small: offsets, keys derived if they can be)
    source = _Source(cid, [], np.zeros(layout.num_shards(), PIECE_DTYPE), _schema_of(layout), counts)
    for i, shard in enumerate(layout.shards):
        index = layout._index(i)
        data = encode_index(list(index.keys), list(index.offsets))
        added = import_bytes(data, store, options)
        tar_cid = client.resolve(shard.ref)
        size = shard.size if shard.size is not None else client.stat(tar_cid).size
        source.files.append(
            ShardFile(tar_cid, added.cid, size, len(index), len(data), hashlib.sha256(data).digest())
        )
        source.new_indexes.append((f"{added.cid}.idx", Built(added.cid, added.size, added.filesize)))
        source.pieces[i] = (i, 0, 0, len(index))
    return source


class _Composer:
    """Collects files (each distinct one once) and pieces, then writes the new root.
    Used as a context manager: a concurrent ``repo gc`` is held off from the first index
    file written (for a v1 input) until the new root is pinned."""

    def __init__(self, client: Any, op: str) -> None:
        from torch_ipfs.client import default_client

        self.client = client if client is not None else default_client()
        self.store = self.client.store
        self.options = ImportOptions()
        self.op = op
        self.sources: list[_Source] = []
        self._by_cid: dict[CID, _Source] = {}
        self.files: list[ShardFile] = []
        self._file_ids: dict[tuple[CID, CID], int] = {}

    def __enter__(self) -> _Composer:
        self._writing = self.store.writer()
        self._writing.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._writing.__exit__(*exc)

    def source(self, root: Any) -> _Source:
        cid = self.client.resolve(parse_address(root))
        found = self._by_cid.get(cid)
        if found is None:
            found = self._by_cid[cid] = _read_source(cid, self.client, self.store, self.options)
            if self.sources and found.schema != self.sources[0].schema:
                raise ValueError(
                    f"{self.op}: {cid} has samples {found.schema}, but {self.sources[0].cid} has "
                    f"{self.sources[0].schema}; only datasets with the same fields can be composed"
                )
            self.sources.append(found)
            found.pieces = self._global(found)
        return found

    def _global(self, source: _Source) -> Any:
        """The source's pieces with file numbers of the new table."""
        ids = np.zeros(len(source.files), dtype=np.uint32)
        for i, f in enumerate(source.files):
            key = (f.tar_cid, f.index_cid)
            if key not in self._file_ids:
                self._file_ids[key] = len(self.files)
                self.files.append(f)
            ids[i] = self._file_ids[key]
        pieces = source.pieces.copy()
        if len(pieces):
            pieces["file"] = ids[pieces["file"]]
        return pieces

    def write(self, pieces: Any, *, name: str | None, description: str | None,
              class_counts: dict[str, int] | None, extra: dict[str, Any] | None = None) -> CID:  # fmt: skip
        if not len(pieces):
            raise ValueError(f"{self.op}: the result would have no samples")
        total = int(pieces["count"].astype(np.int64).sum())
        table = encode_table(self.files, pieces)
        writer = self.options.writer(self.store)
        with self.store.writer():  # (re-entrant) holds off a concurrent gc until the root is pinned
            table_added = import_bytes(table, self.store, self.options)
            schema = self.sources[0].schema
            manifest = tarshards.build_manifest_v2(
                table_added.cid, table, total, len(pieces),
                name=name, description=description, class_counts=class_counts,
                provenance={"op": self.op, "inputs": len(self.sources)}, **schema,
            )  # fmt: skip
            if extra:
                manifest.update(extra)
            manifest_added = import_bytes(tarshards.encode_manifest(manifest), self.store, self.options)
            parts = [(f"{i:06d}", self._built(s.cid)) for i, s in enumerate(self.sources)]
            # many distinct inputs make a big directory: HAMT-sharded past Kubo's threshold
            new_indexes = dict(entry for s in self.sources for entry in s.new_indexes)
            entries = [
                (MANIFEST, Built(manifest_added.cid, manifest_added.size, manifest_added.filesize)),
                (tarshards.TABLE_NAME, Built(table_added.cid, table_added.size, table_added.filesize)),
                (PARTS_DIR, directory_node(writer, self.options, parts)),
            ]
            if new_indexes:
                entries.append(
                    (tarshards.INDEX_DIR, directory_node(writer, self.options, sorted(new_indexes.items())))
                )
            root = writer.directory(sorted(entries))
            self.store.pin(root.cid, check=False)
        return root.cid

    def _built(self, cid: CID) -> Built:
        stat = self.client.stat(cid)
        return Built(cid, stat.cumulative_size, None)


def _roots(roots: Any, what: str) -> list[Any]:
    if isinstance(roots, (str, CID)):
        raise TypeError(f"{what} takes a list of roots, not one root ({roots!r})")
    out = list(roots)
    if not out:
        raise ValueError(f"{what} needs at least one root")
    return out


def concat(
    roots: Sequence[str | CID],
    *,
    name: str | None = None,
    description: str | None = None,
    client: Any = None,
) -> CID:
    """A dataset of ``roots`` one after another (sample ``i`` of the result is sample
    ``i - len(earlier roots)`` of the root it falls in); returns its root CID.

    Only a new manifest and shard table are written; each distinct shard is listed once
    in the table however many times it repeats, so concatenating one export 100,000
    times costs a few MB. Roots may repeat. ``class_counts`` are summed when every root
    has them.
    """
    with _Composer(client, "concat") as composer:
        sources = [composer.source(r) for r in _roots(roots, "concat")]
        counts: dict[str, int] = {}
        for source in sources:
            for label, n in (source.class_counts or {}).items():
                counts[label] = counts.get(label, 0) + int(n)
        known = all(s.class_counts is not None for s in sources)
        return composer.write(
            np.concatenate([s.pieces for s in sources]), name=name, description=description,
            class_counts=counts if known and counts else None,
        )  # fmt: skip


def _runs(indices_or_ranges: Any, n: int) -> Any:
    """``(start, stop)`` runs (int64 array of shape (k, 2)) of the selection, in order."""
    runs: list[Any] = []
    singles: list[int] = []

    def flush() -> None:
        if singles:
            arr = np.asarray(singles, dtype=np.int64)
            breaks = np.nonzero(np.diff(arr) != 1)[0] + 1
            starts = arr[np.concatenate([[0], breaks])]
            stops = arr[np.concatenate([breaks - 1, [len(arr) - 1]])] + 1
            runs.append(np.stack([starts, stops], axis=1))
            singles.clear()

    items: Iterable[Any]
    if isinstance(indices_or_ranges, (range, int, np.integer)):
        items = [indices_or_ranges]
    else:
        items = indices_or_ranges
    for item in items:
        if isinstance(item, range):
            if item.step == 1:
                flush()
                if len(item):
                    if item.start < 0 or item.stop > n:
                        raise ValueError(f"subset: {item} is out of range for {n} samples")
                    runs.append(np.array([[item.start, item.stop]], dtype=np.int64))
                continue
            item = list(item)
        if isinstance(item, np.ndarray):
            values = item.astype(np.int64).ravel().tolist()
        elif isinstance(item, (list, tuple)):
            values = list(item)
        else:
            values = [item]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"subset takes integer indices and ranges, got {v!r}")
            if not 0 <= int(v) < n:
                raise ValueError(f"subset: index {int(v)} is out of range for {n} samples")
            singles.append(int(v))
    flush()
    return np.concatenate(runs) if runs else np.zeros((0, 2), dtype=np.int64)


def subset(
    root: str | CID,
    indices_or_ranges: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    client: Any = None,
) -> CID:
    """A dataset of the samples of ``root`` at ``indices_or_ranges``, in that order
    (``torch.utils.data.Subset``'s meaning: repeats allowed); returns its root CID.

    ``indices_or_ranges``: integers, ``range`` objects, or a list mixing them (a numpy
    array works too). Runs of consecutive indices become one piece of a shard, so a
    selection of ranges costs a table row per range and shard it touches; scattered
    indices cost a row each (24 bytes).
    """
    with _Composer(client, "subset") as composer:
        return _subset(composer, composer.source(root), indices_or_ranges, name, description)


def _subset(composer: _Composer, source: _Source, indices_or_ranges: Any, name: str | None,
            description: str | None) -> CID:  # fmt: skip
    pieces = source.pieces
    counts = pieces["count"].astype(np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    runs = _runs(indices_or_ranges, total)
    out: list[tuple[int, int, int]] = []
    for a, b in runs.tolist():
        p = int(np.searchsorted(ends, a, side="right"))
        while a < b:
            begin = int(ends[p] - counts[p])
            take = min(b, int(ends[p])) - a
            row = pieces[p]
            start = int(row["start"]) + a - begin
            if out and out[-1][0] == int(row["file"]) and out[-1][1] + out[-1][2] == start:
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + take)  # continues the last piece
            else:
                out.append((int(row["file"]), start, take))
            a += take
            p += 1
    table = np.zeros(len(out), PIECE_DTYPE)
    for i, (f, start, count) in enumerate(out):
        table[i] = (f, 0, start, count)
    return composer.write(table, name=name, description=description, class_counts=None)


def mix(
    roots: Sequence[str | CID],
    weights: Sequence[float],
    *,
    epoch_samples: int | None = None,
    name: str | None = None,
    description: str | None = None,
    client: Any = None,
) -> CID:
    """A weighted mix of ``roots`` for streaming; returns its root CID.

    :class:`~torch_ipfs.datasets.IPFSIterableDataset` over the result draws, each epoch,
    ``epoch_samples`` samples (default: all the roots' samples together) split between
    the roots in proportion to ``weights``: root ``s`` gives ``k_s`` samples, its whole
    passes plus a window of consecutive samples that moves on every epoch, so a root
    drawn below its size shows every sample once before any twice over the epochs (see
    :func:`torch_ipfs.sharding.mix_epoch_order`). Which samples an epoch draws is a pure
    function of ``(seed, epoch)``; they are split over ranks and workers exactly once,
    with equal counts per rank, as for any root. Map-style
    :class:`~torch_ipfs.datasets.IPFSDataset` reads the result as the concatenation.
    """
    roots = _roots(roots, "mix")
    weights = list(weights)
    if len(weights) != len(roots):
        raise ValueError(f"mix: {len(roots)} roots but {len(weights)} weights")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < float("inf"):
            raise ValueError(f"mix: weights must be positive numbers, got {w!r}")
    if epoch_samples is not None and (isinstance(epoch_samples, bool) or not isinstance(epoch_samples, int)
                                      or epoch_samples < 1):  # fmt: skip
        raise ValueError(f"mix: epoch_samples must be a positive integer, got {epoch_samples!r}")
    with _Composer(client, "mix") as composer:
        pieces = [composer.source(r).pieces for r in roots]
        streams = [{"shards": len(p), "weight": float(w)} for p, w in zip(pieces, weights)]
        extra: dict[str, Any] = {"mix": {"streams": streams}}
        if epoch_samples is not None:
            extra["mix"]["epoch_samples"] = epoch_samples
        return composer.write(np.concatenate(pieces), name=name, description=description, class_counts=None,
                              extra=extra)  # fmt: skip
