"""The sharded-tar layout: WebDataset tar shards plus a manifest saying where samples are.

The exporter (:mod:`torch_ipfs.exporter`) writes it; any folder of ``.tar`` files
(WebDataset shards made by other tools) reads as it too, its index then built from the
tar headers with range reads. Two manifest versions (exact schemas in
``docs/layouts.md``):

- **v2** (what :func:`torch_ipfs.export` writes; O(shards) to open)::

    <root>/manifest.json          schema + the shard table's CID, size and SHA-256
    <root>/shard-table.bin        binary: pieces (file, start, count) and files (CIDs, sizes)
    <root>/index/shard-000000.idx binary per-shard index: offsets, keys (often derived)
    <root>/shards/shard-000000.tar ...

  Composed datasets (:mod:`torch_ipfs.compose`) are v2 roots whose table points at the
  shards and indexes of other roots by CID.
- **v1**: ``manifest.json`` lists every shard with every sample's key and offset.

Map-style access reads one sample's byte range (``offsets[i] .. offsets[i + 1]``) from
its shard, which touches only the blocks covering it; iteration streams a run of samples
of a shard with bounded memory.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sys
from collections import OrderedDict
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from torch_ipfs import config
from torch_ipfs.cid import CID, IPFSPath
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats import tar
from torch_ipfs.formats.base import (
    ClientHandle,
    Layout,
    RawSample,
    SampleSchema,
    check_member_name,
    check_sample_size,
)
from torch_ipfs.formats.manifest import MAX_MANIFEST_BYTES, encode_json, field, parse_cid
from torch_ipfs.formats.shardindex import MappedFiles, PackedIndex
from torch_ipfs.formats.shardtable import ShardTable
from torch_ipfs.formats.tar import ShardIndex, write_tar_shard
from torch_ipfs.formats.tarsample import key_is_plain, plain_fields
from torch_ipfs.sources.base import MAX_BLOCK_SIZE

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TarShard",
    "TarShardsLayout",
    "PackedTarShardsLayout",
    "build_manifest",
    "build_manifest_v2",
    "encode_manifest",
    "is_tarshards_manifest",
    "shard_name",
    "write_tar_shard",
]

FORMAT = "torch_ipfs.tarshards"
FORMAT_VERSION = 1
#: Manifest v2: a binary shard table plus one binary index per shard (what export writes).
FORMAT_VERSION_2 = 2
SHARDS_DIR = "shards"
#: Directory of the per-shard index files in an exported root.
INDEX_DIR = "index"
#: File name of the shard table in a v2 root.
TABLE_NAME = "shard-table.bin"
#: Where verified copies of shard tables and indexes are kept, under the client's home.
LOCAL_COPIES_DIR = "indexes"
_STRUCTURES = ("tuple", "dict", "single")
_LITTLE_ENDIAN = sys.byteorder == "little"  # the index's '<u8' offsets then read as native 'Q'


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-000000.tar`` (sorts in shard order)."""
    return f"shard-{index:06d}.tar"


def index_name(index: int) -> str:
    """File name of shard ``index``'s index file (v2): ``shard-000000.idx``."""
    return f"shard-{index:06d}.idx"


# -- writing the manifest ------------------------------------------------------------------


def schema_entries(
    *,
    name: str | None = None,
    description: str | None = None,
    parent: str | None = None,
    fields: Mapping[str, str] | None = None,
    structure: str = "dict",
    keys: Mapping[str, str] | None = None,
    label_field: str | None = None,
    classes: Sequence[str] | None = None,
    class_counts: Mapping[str, int] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest keys both versions share: the sample schema and the description."""
    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(_STRUCTURES)}; got {structure!r}")
    keys = dict(keys or {})
    field_list = []
    for fname, ftype in (fields or {}).items():
        entry = {"name": fname, "type": ftype}
        if keys.get(fname, fname) != fname:
            entry["key"] = keys[fname]
        field_list.append(entry)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "structure": structure,
        "fields": field_list,  # a list: the order is the order of the sample's parts
    }
    if provenance is None and parent:
        provenance = {"parent": str(parent)}
    optional = {
        "name": name,
        "description": description,
        "label_field": label_field,
        "classes": list(classes) if classes is not None else None,
        "class_counts": dict(class_counts) if class_counts else None,
        "provenance": dict(provenance) if provenance else None,
    }
    manifest.update({k: v for k, v in optional.items() if v is not None})
    return manifest


def build_manifest(shards: Sequence[Mapping[str, Any]], **schema: Any) -> dict[str, Any]:
    """The version-1 manifest of a sharded-tar dataset (plain JSON values, schema in
    docs/layouts.md): every sample's key and offset inline, for small datasets and
    tools that want one JSON file. :func:`build_manifest_v2` is what the exporter writes.

    ``shards`` holds, per shard in order: ``name`` (file name under ``shards/``),
    ``cid`` (CID or string), ``bytes`` (file size) and ``index`` (:class:`ShardIndex`
    from :func:`write_tar_shard`, or its ``to_json()``). ``schema``: the keyword
    arguments of :func:`schema_entries`.
    """
    entries = []
    total = 0
    for info in shards:
        index = info["index"]
        if not isinstance(index, ShardIndex):
            index = ShardIndex(list(index["keys"]), list(index["offsets"]))
        entries.append(
            {
                "path": f"{SHARDS_DIR}/{info['name']}",
                "cid": str(info["cid"]),
                "size": int(info["bytes"]),
                "num_samples": len(index),
                **index.to_json(),
            }
        )
        total += len(index)
    manifest = schema_entries(**schema)
    manifest.update({"version": FORMAT_VERSION, "total_samples": total, "shards": entries})
    return manifest


def build_manifest_v2(
    table_cid: CID | str, table_bytes: bytes, total_samples: int, num_shards: int, **schema: Any
) -> dict[str, Any]:
    """The version-2 manifest: the schema, the sample count and a reference to the
    binary shard table (``table_bytes``, stored with CID ``table_cid``)."""
    manifest = schema_entries(**schema)
    manifest.update(
        {
            "version": FORMAT_VERSION_2,
            "total_samples": int(total_samples),
            "num_shards": int(num_shards),
            "shard_table": {
                "cid": str(table_cid),
                "bytes": len(table_bytes),
                "sha256": hashlib.sha256(table_bytes).hexdigest(),
            },
        }
    )
    return manifest


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of a manifest (sorted keys, no spaces, UTF-8)."""
    return encode_json(manifest)


def is_tarshards_manifest(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


# -- reading -------------------------------------------------------------------------------


@dataclass
class TarShard:
    """One tar file: where it is, and its index once known (from the manifest or built)."""

    ref: IPFSPath
    label: str
    size: int | None = None
    index: ShardIndex | None = None


def _parse_shard(entry: Any, i: int, root: IPFSPath, where: str) -> TarShard:
    at = f"{where}: shards[{i}]"
    path = check_member_name(field(entry, "path", str, at), at)
    cid = field(entry, "cid", str, at, required=False)
    ref = (
        IPFSPath(parse_cid(cid, f"{at}.cid"), "", root.gateway)
        if cid
        else IPFSPath(root.cid, f"{root.path}/{path}".strip("/"), root.gateway)
    )
    size = field(entry, "size", int, at, required=False)
    keys = field(entry, "keys", list, at, required=False)
    offsets = field(entry, "offsets", list, at, required=False)
    index = None
    if keys is not None or offsets is not None:
        if keys is None or offsets is None:
            raise ManifestError(f"{at}: 'keys' and 'offsets' go together")
        if not all(isinstance(k, str) for k in keys):
            raise ManifestError(f"{at}: 'keys' must be strings")
        if not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
            raise ManifestError(f"{at}: 'offsets' must be integers")
        if len(offsets) != len(keys) + 1:
            raise ManifestError(f"{at}: {len(keys)} keys need {len(keys) + 1} offsets, got {len(offsets)}")
        if any(b < a for a, b in zip(offsets, offsets[1:])) or (offsets and offsets[0] < 0):
            raise ManifestError(f"{at}: 'offsets' must be non-negative and increasing")
        if size is not None and offsets and offsets[-1] > size:
            raise ManifestError(f"{at}: offsets run past the shard size {size}")
        index = ShardIndex(keys, offsets)
        declared = field(entry, "num_samples", int, at, required=False)
        if declared is not None and declared != len(keys):
            raise ManifestError(f"{at}: num_samples {declared} but the index lists {len(keys)} samples")
    return TarShard(ref, path, size, index)


def schema_from_manifest(manifest: dict[str, Any], where: str) -> SampleSchema:
    """The sample schema a manifest declares (fields, structure, keys, label, classes)."""
    structure = field(manifest, "structure", str, where, required=False) or "dict"
    if structure not in _STRUCTURES:
        raise ManifestError(
            f"{where}: 'structure' must be one of {', '.join(_STRUCTURES)}, got {structure!r}"
        )
    entries = field(manifest, "fields", list, where, required=False) or []
    label = field(manifest, "label_field", str, where, required=False)
    classes = field(manifest, "classes", list, where, required=False)
    types: dict[str, str] = {}
    keys: dict[str, str] = {}
    for i, entry in enumerate(entries):
        at = f"{where}: fields[{i}]"
        fname = field(entry, "name", str, at)
        types[fname] = field(entry, "type", str, at)
        key = field(entry, "key", str, at, required=False)
        if key is not None:
            keys[fname] = key
    if structure != "dict" and not types:
        raise ManifestError(f"{where}: structure {structure!r} needs 'fields' (their order)")
    return SampleSchema(
        structure=structure,
        types=dict(types),
        keys=dict(keys),
        label_field=label,
        classes=[str(c) for c in classes] if classes is not None else None,
        with_key=False,
    )


class TarShardsLayout(Layout):
    """Samples stored as WebDataset tar shards, listed one by one (manifest v1, or tars
    found in a directory); see the module docstring. :class:`PackedTarShardsLayout`
    reads manifest v2 with the same readers."""

    name = "tarshards"

    def __init__(
        self,
        client: ClientHandle,
        where: str,
        shards: list[TarShard],
        schema: SampleSchema | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(client, where)
        if not shards:
            raise ManifestError(f"{where}: a tar-shard dataset needs at least one shard")
        self.shards = shards
        self.schema = schema or SampleSchema()
        self.meta = meta or {}
        self._sizes: list[int] | None = None

    @classmethod
    def from_manifest(
        cls, client: ClientHandle, root: IPFSPath, manifest: Any, where: str
    ) -> TarShardsLayout:
        version = field(manifest, "version", int, where)
        if version == FORMAT_VERSION_2:
            return PackedTarShardsLayout.from_manifest_v2(client, root, manifest, where)
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: {FORMAT} version {version} is not supported (only {FORMAT_VERSION} "
                f"and {FORMAT_VERSION_2})"
            )
        entries = field(manifest, "shards", list, where)
        shards = [_parse_shard(e, i, root, where) for i, e in enumerate(entries)]
        total = field(manifest, "total_samples", int, where, required=False)
        if total is not None and all(s.index is not None for s in shards):
            counted = sum(len(s.index) for s in shards if s.index is not None)
            if counted != total:
                raise ManifestError(f"{where}: total_samples {total} but the shards index {counted} samples")
        return cls(client, where, shards, schema_from_manifest(manifest, where), _meta(manifest))

    # -- what the readers need of a shard (overridden by the packed layout) ---------------

    def num_shards(self) -> int:
        return len(self.shards)

    def _index(self, i: int) -> Any:
        """Shard ``i``'s index: ``len``, ``span(start, stop)``, ``keys``."""
        shard = self.shards[i]
        if shard.index is None:
            f = self.file(shard.ref)
            shard.index = tar.scan_index(f.read_range, f.size, self._where(i))
            shard.size = f.size
        return shard.index

    def _first(self, i: int) -> int:
        """Position in shard ``i``'s index of the shard's first sample (a v2 piece may
        start inside its file)."""
        return 0

    def _ref(self, i: int) -> IPFSPath:
        return self.shards[i].ref

    def _declared_size(self, i: int) -> int | None:
        return self.shards[i].size

    def _where(self, i: int) -> str:
        return f"{self.where}: {self.shards[i].label}"

    #: Shard files kept open per process (each holds its decoded root node, a few KB):
    #: a random read then never re-opens its shard nor re-decodes the root.
    max_open_shards = 1024

    def _checked_file(self, i: int) -> Any:
        pid = os.getpid()
        open_files: dict[int, Any] | None = getattr(self, "_open", None)
        if open_files is None or getattr(self, "_open_pid", None) != pid:
            open_files = {}
            self._open: dict[int, Any] = open_files
            self._open_pid = pid
        f = open_files.get(i)
        if f is not None:
            return f
        f = self.file(self._ref(i))
        size = self._declared_size(i)
        if size is not None and f.size != size:
            raise ManifestError(f"{self._where(i)}: the manifest says {size} bytes, the file has {f.size}")
        if len(open_files) >= self.max_open_shards:
            open_files.pop(next(iter(open_files)))  # the oldest opened
        open_files[i] = f
        return f

    def _is_open(self, i: int) -> bool:
        """True when this process holds shard ``i``'s file open (its root decoded)."""
        return getattr(self, "_open_pid", None) == os.getpid() and i in getattr(self, "_open", {})

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_open", None)  # file objects hold sources of this process
        state.pop("_open_pid", None)
        state.pop("_plain_state", None)
        return state

    def shard_sizes(self) -> list[int]:
        """Samples in each shard, in order (from the manifest: no shard is read for it,
        except tars that came without an index)."""
        if self._sizes is None:
            self._sizes = [len(self._index(i)) for i in range(len(self.shards))]
        return self._sizes

    def shard_ref(self, i: int) -> IPFSPath:
        """Where shard ``i``'s tar file is."""
        return self._ref(i)

    def sample_key(self, index: int) -> str:
        """The tar key of sample ``index`` (reads its shard's index, not the shard)."""
        shard, offset = self.locate(index)
        return str(self._index(shard).keys[self._first(shard) + offset])

    def byte_span(self, index: int) -> tuple[int, int, int]:
        """``(shard, offset, length)``: where sample ``index``'s bytes are in its tar."""
        shard, offset = self.locate(index)
        first = self._first(shard) + offset
        start, length = self._index(shard).span(first, first + 1)
        return shard, start, length

    # -- reading ------------------------------------------------------------------------

    def read_sample(self, index: int) -> RawSample:
        fast = self.read_plain(index)
        if fast is not None:
            return RawSample(fast[0], fast[1])
        return self._read_sample_strict(index)

    def read_plain(self, index: int) -> tuple[str, dict[str, bytes]] | None:
        """``(key, fields)`` of sample ``index`` by the short path, or None when the short
        path does not take it (then :meth:`read_sample` reads it strictly, which gives the
        same sample or a typed error naming shard and key).

        The short path: shard by bisect over the shard starts, the sample's byte range
        from the memory-mapped index, the verified leaf holding it from the process's
        verified-block cache (:meth:`UnixFSFile.leaf_bytes`: fetched and hashed on its
        first use; in a deeper tree, :meth:`UnixFSFile.read_range`), its plain tar headers
        parsed by
        :func:`~torch_ipfs.formats.tarsample.plain_fields`. Block fetch errors propagate
        as they would from the strict read."""
        state = self._plain_state
        if state is None or state[0] != os.getpid():
            state = self._new_plain_state()
        _, starts, total, hot, limit = state
        if not 0 <= index < total:
            return None
        shard = bisect.bisect_right(starts, index) - 1
        h = hot.get(shard)
        if h is None:
            h = self._plain_shard(shard, hot)
        offsets, first, key_of, plain_keys, file = h
        j = first + index - starts[shard]
        lo, hi = offsets[j], offsets[j + 1]
        if not 0 <= lo < hi or hi - lo > limit:
            return None
        key = key_of(j)
        if not plain_keys and not key_is_plain(key):
            return None
        leaf = file.leaf_bytes(lo, hi)
        if leaf is None:  # a deeper tree: the general walk reads the range (verified)
            view = memoryview(file.read_range(lo, hi - lo))
            if len(view) != hi - lo:
                return None  # cut off: the strict read says so
        else:
            data, at = leaf
            view = memoryview(data)[lo - at : hi - at]
        fields = plain_fields(view, key)  # each field copied once, out of the view
        return None if fields is None else (key, fields)

    #: per-process state of :meth:`read_plain`: (pid, shard starts, total, shards, limit)
    _plain_state: tuple[int, list[int], int, dict[int, Any], int] | None = None

    def _new_plain_state(self) -> tuple[int, list[int], int, dict[int, Any], int]:
        starts = list(self.shard_starts())
        hot: dict[int, Any] = {}
        state = (os.getpid(), starts, len(self), hot, config.max_sample_bytes())
        self._plain_state = state
        return state

    def _plain_shard(self, shard: int, hot: dict[int, Any]) -> tuple[Any, int, Any, bool, Any]:
        """What :meth:`read_plain` keeps per shard: the index's offsets (a Python-indexable
        view), the shard's first position in it, how to get key ``j``, whether every key
        is plain, and the open, size-checked shard file."""
        idx = self._index(shard)
        offsets: Any
        key_of: Any
        plain = False
        if isinstance(idx, PackedIndex):
            arr = idx.offsets
            offsets = memoryview(arr).cast("B").cast("Q") if _LITTLE_ENDIAN else arr.tolist()
            if idx.decimal_keys is not None:
                base, width = idx.decimal_keys
                plain = True  # digits only

                def key_of(j: int, base: int = base, width: int = width) -> str:
                    return f"{base + j:0{width}d}"

            else:
                key_of = idx.key
        else:
            offsets, key_of = idx.offsets, idx.keys.__getitem__
        if len(hot) >= self.max_open_shards:
            hot.clear()
        entry = (offsets, self._first(shard), key_of, plain, self._checked_file(shard))
        hot[shard] = entry
        return entry

    def _read_sample_strict(self, index: int) -> RawSample:
        shard, offset = self.locate(index)
        idx = self._index(shard)
        j = self._first(shard) + offset
        start, length = idx.span(j, j + 1)
        limit = config.max_sample_bytes()
        if length > limit:  # before reading
            check_sample_size(length, f"{self._where(shard)}: sample {idx.keys[j]!r}", limit)
        data = self._checked_file(shard).read_range(start, length)
        where = self._where_cached(shard)
        key = idx.keys[j]
        if len(data) != length:
            raise ManifestError(f"{where}: sample {key!r} is cut off by the end of the file")
        try:
            samples = list(tar.samples_of([data], where, start, limit))
        except ManifestError as e:  # the tar's message, with the sample the index put there
            raise ManifestError(f"{e} (reading sample {key!r}, at {start} by the index)") from e
        if len(samples) != 1 or samples[0].key != key:
            found = [s.key for s in samples]
            raise ManifestError(f"{where}: index says sample {key!r} at {start}, found {found}")
        return samples[0]

    def _where_cached(self, i: int) -> str:
        """:meth:`_where` of shard ``i``, made once (a v2 table's CID costs a decode)."""
        wheres: dict[int, str] | None = getattr(self, "_wheres", None)
        if wheres is None:
            wheres = {}
            self._wheres: dict[int, str] = wheres
        where = wheres.get(i)
        if where is None:
            if len(wheres) >= 4096:
                wheres.clear()
            where = wheres[i] = self._where(i)
        return where

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        return self.iter_span_values(shard, start, stop, None)  # type: ignore[return-value]

    def iter_span_values(
        self, shard: int, start: int, stop: int, fields: tuple[str, ...] | None
    ) -> Iterator[RawSample | tuple[bytes, ...]]:
        """:meth:`iter_span`, except that a sample whose field names are exactly
        ``fields`` comes as the tuple of those fields' bytes (in that order): samples are
        sliced out of the verified chunks at the index's offsets
        (:func:`torch_ipfs.formats.tar.iter_indexed`)."""
        if start >= stop:
            return
        idx = self._index(shard)
        first = self._first(shard)
        offset, length = idx.span(first + start, first + stop)
        # A span nothing has fetched yet comes in one CAR response over a gateway; from a
        # shard not opened yet, without fetching its root node first (the stream brings it).
        stream_range = getattr(self.client, "stream_range", None)
        chunks = None
        if stream_range is not None and not self._is_open(shard) and not self._ref(shard).gateway:
            size = self._declared_size(shard)
            if size is not None:
                streamed = stream_range(self._ref(shard).cid, offset, length, size=size)
                if streamed is not None:
                    chunks = self._checked_after_first(streamed, shard)
        if chunks is None:
            f = self._checked_file(shard)
            chunks = stream_range(f, offset, length) if stream_range is not None else None
            if chunks is None:
                chunks = f.iter_chunks(offset, length)
        where = self._where_cached(shard)
        yield from tar.iter_indexed(chunks, where, idx, first + start, first + stop, fields)

    def _checked_after_first(self, chunks: Generator[Any, None, None], shard: int) -> Iterator[Any]:
        """``chunks`` of a stream that began without the shard's root node: once the
        first has come (the root with it, now cached), the shard is opened and its size
        checked against the manifest's, before any sample is sliced out."""
        with closing(chunks):  # the stream's thread stops with it, also on an error
            first_chunk = next(chunks, None)
            self._checked_file(shard)
            if first_chunk is not None:
                yield first_chunk
                yield from chunks

    def prefetch_span(self, shard: int, start: int, stop: int) -> Future[int] | None:
        entry = self.shards[shard]
        if entry.index is not None and start < stop:
            offset, length = entry.index.span(start, stop)
            return self.client.prefetch(entry.ref, offset, length)
        return self.client.prefetch(entry.ref)  # not indexed yet: the reader scans it all

    def describe(self) -> list[str]:
        lines = super().describe() + [f"Shards: {self.num_shards()}"]
        if self.meta.get("name"):
            lines.insert(0, f"Name: {self.meta['name']}")
        return lines


def _meta(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest[k] for k in ("name", "description", "class_counts", "provenance") if k in manifest}


class PackedTarShardsLayout(TarShardsLayout):
    """Manifest v2: a binary shard table (:mod:`~torch_ipfs.formats.shardtable`) and one
    binary index per tar file (:mod:`~torch_ipfs.formats.shardindex`), each index
    fetched the first time one of its samples is read.

    Opening reads ``manifest.json`` and the table only: memory and time in proportion
    to the number of shards, not samples. ``len``, :meth:`locate` and
    :meth:`shard_sizes` come from the table; ``ds[i]`` maps the one index it needs. Both
    files are verified, kept under ``<home>/indexes`` and memory-mapped, so DataLoader
    workers and DDP ranks on a host share them through the page cache.
    """

    #: Indexes mapped at once per process (each is one mapping; the table is another).
    max_mapped_indexes = 1024

    def __init__(
        self,
        client: ClientHandle,
        where: str,
        root: IPFSPath,
        table_ref: tuple[CID, int, bytes],
        total: int,
        schema: SampleSchema,
        meta: dict[str, Any],
    ) -> None:
        Layout.__init__(self, client, where)
        self.root = root
        self.schema = schema
        self.meta = meta
        self._table_ref = table_ref
        self._total_declared = total
        self._table: ShardTable | None = None
        self._indexes: OrderedDict[int, PackedIndex] = OrderedDict()
        self._sizes = None
        #: ``(first_shard, num_shards, weight)`` per stream of a mixed root, else None
        self.streams: list[tuple[int, int, float]] | None = None
        #: samples one epoch of a mixed root draws (None: the streams' total)
        self.epoch_samples: int | None = None
        _ = self.table  # check it now: a bad table fails at open, not at the first read
        self._warm_first_files()

    #: Files whose index (and, for random access, tar root node) the opening process
    #: fetches in the background (one parallel batch of small blocks), so DataLoader
    #: workers started right after find them in the shared cache.
    warm_files = 32

    def _warm_first_files(self, *, indexes: bool = True, roots: bool = False) -> None:
        """Over a remote source, start fetching the indexes (and with ``roots``, the tar
        files' root nodes) of the first :attr:`warm_files` files into the verified cache,
        skipping what is cached already (a no-op locally, and over a gateway after an
        open that brought the index directory). Bounded: at most 2 x ``warm_files``
        blocks, indexes of at most 1 MiB each, and no more files than one round trip
        fetches (two blocks each, ``fetch_width`` at once): a fork waits for this batch,
        so a second round would delay every worker. Streaming reads need no root node
        up front (a span's CAR stream brings it); random reads do (:meth:`warm_first_roots`)."""
        table = self.table
        cids: list[CID] = []
        files = min(len(table.files), self.warm_files, max(1, getattr(self.client, "fetch_width", 0) // 2))
        for file in range(files):
            entry = table.file_entry(file)
            if indexes and entry.index_bytes <= 1024 * 1024:
                cids.append(entry.index_cid)
            if roots and entry.tar_bytes > MAX_BLOCK_SIZE:  # a root node, not a one-block tar's data
                cids.append(entry.tar_cid)
        prefetch_blocks = getattr(self.client, "prefetch_blocks", None)
        #: the future of the latest background fetch (None locally, or nothing to fetch)
        self.warming: Future[int] | None = prefetch_blocks(cids) if prefetch_blocks is not None else None

    def warm_first_roots(self) -> None:
        """Warm the first files' tar root nodes too (for a map-style dataset, whose first
        reads in each worker need them; the open has warmed their indexes)."""
        self._warm_first_files(indexes=False, roots=True)

    @classmethod
    def from_manifest_v2(
        cls, client: ClientHandle, root: IPFSPath, manifest: Any, where: str
    ) -> PackedTarShardsLayout:
        total = field(manifest, "total_samples", int, where)
        table = field(manifest, "shard_table", dict, where)
        at = f"{where}: shard_table"
        cid = parse_cid(field(table, "cid", str, at), f"{at}.cid")
        size = field(table, "bytes", int, at)
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{at}: the table is {size} bytes, over {MAX_MANIFEST_BYTES}")
        sha = _parse_sha256(field(table, "sha256", str, at), f"{at}.sha256")
        layout = cls(client, where, root, (cid, size, sha), total, schema_from_manifest(manifest, where),
                     _meta(manifest))  # fmt: skip
        mix = field(manifest, "mix", dict, where, required=False)
        if mix is not None:
            layout.streams, layout.epoch_samples = _parse_mix(mix, len(layout.table), f"{where}: mix")
        return layout

    # -- the two binary files -------------------------------------------------------------

    def _mapped(self) -> MappedFiles:
        store = getattr(self.client, "store", None)
        home = getattr(store, "root", None)
        return MappedFiles(os.path.join(home, LOCAL_COPIES_DIR) if home else None)

    @property
    def table(self) -> ShardTable:
        """The shard table (pieces and files), mapped on first use in each process."""
        if self._table is None:
            cid, size, sha = self._table_ref
            where = f"{self.where}: shard table {cid}"
            data = self._mapped().get(str(cid), size, sha, lambda: self._fetch(cid, size), where)
            self._table = ShardTable(data, where, total_samples=self._total_declared)
            if not len(self._table):
                raise ManifestError(f"{where}: a tar-shard dataset needs at least one shard")
        return self._table

    def _fetch(self, cid: CID, size: int) -> bytes:
        f = self.client.file(IPFSPath(cid, "", self.root.gateway))
        if f.size != size:
            raise ManifestError(f"{self.where}: file {cid} is {f.size} bytes, the manifest says {size}")
        return bytes(f.read_range(0, size))

    def _file_of(self, i: int) -> int:
        return int(self.table.pieces["file"][i])

    def _index(self, i: int) -> PackedIndex:
        file = self._file_of(i)
        idx = self._indexes.get(file)
        if idx is not None:
            self._indexes.move_to_end(file)
            return idx
        entry = self.table.file_entry(file)
        where = f"{self.where}: index {entry.index_cid} of shard {entry.tar_cid}"
        if entry.index_bytes > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{where}: the index is {entry.index_bytes} bytes, over {MAX_MANIFEST_BYTES}")

        def fetch() -> bytes:
            # Whoever needs a shard's index reads the shard next: over a remote source its
            # root node is fetched meanwhile, in the background (one round trip, not two).
            prefetch_blocks = getattr(self.client, "prefetch_blocks", None)
            if prefetch_blocks is not None and entry.tar_bytes > MAX_BLOCK_SIZE:
                prefetch_blocks([entry.tar_cid])
            return self._fetch(entry.index_cid, entry.index_bytes)

        data = self._mapped().get(str(entry.index_cid), entry.index_bytes, entry.index_sha256, fetch, where)
        idx = PackedIndex(data, where, tar_bytes=entry.tar_bytes)
        if len(idx) != entry.samples:
            raise ManifestError(f"{where}: holds {len(idx)} samples, the shard table says {entry.samples}")
        self._indexes[file] = idx
        while len(self._indexes) > self.max_mapped_indexes:
            self._indexes.popitem(last=False)
        return idx

    def loaded_indexes(self) -> list[int]:
        """Files (table rows) whose index this process has mapped (for tests and stats)."""
        return list(self._indexes)

    # -- the readers' hooks -----------------------------------------------------------------

    def num_shards(self) -> int:
        return len(self.table)

    def _first(self, i: int) -> int:
        return int(self.table.pieces["start"][i])

    def _ref(self, i: int) -> IPFSPath:
        return IPFSPath(self.table.cid(self._file_of(i), 0), "", self.root.gateway)

    def _declared_size(self, i: int) -> int | None:
        return int(self.table.files["tar_bytes"][self._file_of(i)])

    def _where(self, i: int) -> str:
        return f"{self.where}: shard {i} ({self.table.cid(self._file_of(i), 0)})"

    def shard_sizes(self) -> list[int]:
        if self._sizes is None:
            self._sizes = self.table.counts.tolist()
        return self._sizes

    def shard_starts(self) -> list[int]:
        return self.table.starts().tolist()  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self.table.total

    def locate(self, index: int) -> tuple[int, int]:
        table = self.table
        index = self._check_index(index, table.total)
        shard = table.locate(index)
        return shard, index - int(table.ends[shard] - table.counts[shard])

    def prefetch_span(self, shard: int, start: int, stop: int) -> Future[int] | None:
        if start >= stop:
            return None
        first = self._first(shard)
        offset, length = self._index(shard).span(first + start, first + stop)
        return self.client.prefetch(self._ref(shard), offset, length)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_table"] = None  # mapped again (from the local copy) in the receiving process
        state["_indexes"] = OrderedDict()
        state["warming"] = None  # a future of this process's prefetch thread
        return state


def _parse_mix(
    mix: dict[str, Any], shards: int, where: str
) -> tuple[list[tuple[int, int, float]], int | None]:
    entries = field(mix, "streams", list, where)
    epoch_samples = field(mix, "epoch_samples", int, where, required=False)
    streams, first = [], 0
    for i, entry in enumerate(entries):
        at = f"{where}.streams[{i}]"
        count = field(entry, "shards", int, at)
        weight = field(entry, "weight", (int, float), at)
        if isinstance(weight, bool) or not 0 < weight < float("inf"):
            raise ManifestError(f"{at}: weight must be a positive number, got {weight!r}")
        streams.append((first, count, float(weight)))
        first += count
    if not streams or first != shards:
        raise ManifestError(f"{where}: the streams cover {first} shards, the shard table has {shards}")
    return streams, epoch_samples


def _parse_sha256(value: str, where: str) -> bytes:
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ManifestError(f"{where}: expected 64 hex digits, got {value!r:.80}")
    return digest


def shard_from_cid(cid: CID, root: IPFSPath, label: str) -> TarShard:
    return TarShard(IPFSPath(cid, "", root.gateway), label)
