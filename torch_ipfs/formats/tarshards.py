"""The sharded-tar layout: WebDataset tar shards plus a manifest with a per-sample index.

The exporter (:mod:`torch_ipfs.exporter`) writes it; any folder of ``.tar`` files
(WebDataset shards made by other tools) reads as it too, its index then built from the
tar headers with range reads. The exact manifest schema is in ``docs/layouts.md``::

    <root>/manifest.json
    <root>/shards/shard-000000.tar
    <root>/shards/shard-000001.tar ...

Map-style access reads one sample's byte range (``offsets[i] .. offsets[i + 1]``) from
its shard, which touches only the blocks covering it; iteration streams a run of samples
of a shard with bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

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
from torch_ipfs.formats.manifest import encode_json, field, parse_cid
from torch_ipfs.formats.tar import ShardIndex, write_tar_shard

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TarShard",
    "TarShardsLayout",
    "build_manifest",
    "encode_manifest",
    "is_tarshards_manifest",
    "shard_name",
    "write_tar_shard",
]

FORMAT = "torch_ipfs.tarshards"
FORMAT_VERSION = 1
SHARDS_DIR = "shards"
_STRUCTURES = ("tuple", "dict", "single")


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-000000.tar`` (sorts in shard order)."""
    return f"shard-{index:06d}.tar"


# -- writing the manifest ------------------------------------------------------------------


def build_manifest(
    shards: Sequence[Mapping[str, Any]],
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
) -> dict[str, Any]:
    """The manifest of a sharded-tar dataset (plain JSON values, schema in docs/layouts.md).

    ``shards`` holds, per shard in order: ``name`` (file name under ``shards/``),
    ``cid`` (CID or string), ``bytes`` (file size) and ``index`` (:class:`ShardIndex`
    from :func:`write_tar_shard`, or its ``to_json()``).
    """
    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(_STRUCTURES)}; got {structure!r}")
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
    keys = dict(keys or {})
    field_list = []
    for fname, ftype in (fields or {}).items():
        entry = {"name": fname, "type": ftype}
        if keys.get(fname, fname) != fname:
            entry["key"] = keys[fname]
        field_list.append(entry)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "total_samples": total,
        "structure": structure,
        "fields": field_list,  # a list: the order is the order of the sample's parts
        "shards": entries,
    }
    optional = {
        "name": name,
        "description": description,
        "label_field": label_field,
        "classes": list(classes) if classes is not None else None,
        "class_counts": dict(class_counts) if class_counts else None,
        "provenance": {"parent": str(parent)} if parent else None,
    }
    manifest.update({k: v for k, v in optional.items() if v is not None})
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
    """Samples stored as WebDataset tar shards (see the module docstring)."""

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
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: {FORMAT} version {version} is not supported (only {FORMAT_VERSION})"
            )
        entries = field(manifest, "shards", list, where)
        shards = [_parse_shard(e, i, root, where) for i, e in enumerate(entries)]
        total = field(manifest, "total_samples", int, where, required=False)
        if total is not None and all(s.index is not None for s in shards):
            counted = sum(len(s.index or ()) for s in shards)
            if counted != total:
                raise ManifestError(f"{where}: total_samples {total} but the shards index {counted} samples")
        meta = {
            k: manifest[k] for k in ("name", "description", "class_counts", "provenance") if k in manifest
        }
        return cls(client, where, shards, schema_from_manifest(manifest, where), meta)

    # -- index --------------------------------------------------------------------------

    def _index(self, i: int) -> ShardIndex:
        shard = self.shards[i]
        if shard.index is None:
            f = self.file(shard.ref)
            shard.index = tar.scan_index(f.read_range, f.size, self._where(i))
            shard.size = f.size
        return shard.index

    def _where(self, i: int) -> str:
        return f"{self.where}: {self.shards[i].label}"

    def _checked_file(self, i: int) -> Any:
        f = self.file(self.shards[i].ref)
        size = self.shards[i].size
        if size is not None and f.size != size:
            raise ManifestError(f"{self._where(i)}: the manifest says {size} bytes, the file has {f.size}")
        return f

    def shard_sizes(self) -> list[int]:
        if self._sizes is None:
            self._sizes = [len(self._index(i)) for i in range(len(self.shards))]
        return self._sizes

    # -- reading ------------------------------------------------------------------------

    def read_sample(self, index: int) -> RawSample:
        shard, offset = self.locate(index)
        idx = self._index(shard)
        start, length = idx.span(offset, offset + 1)
        check_sample_size(length, f"{self._where(shard)}: sample {idx.keys[offset]!r}")  # before reading
        data = self._checked_file(shard).read_range(start, length)
        where = self._where(shard)
        if len(data) != length:
            raise ManifestError(f"{where}: sample {idx.keys[offset]!r} is cut off by the end of the file")
        samples = list(tar.group_samples(tar.iter_members([data], where, start), where))
        if len(samples) != 1 or samples[0].key != idx.keys[offset]:
            found = [s.key for s in samples]
            raise ManifestError(f"{where}: index says sample {idx.keys[offset]!r} at {start}, found {found}")
        return samples[0]

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        if start >= stop:
            return
        idx = self._index(shard)
        offset, length = idx.span(start, stop)
        where = self._where(shard)
        chunks = self._checked_file(shard).iter_chunks(offset, length)
        expected = iter(idx.keys[start:stop])
        count = 0
        for sample in tar.group_samples(tar.iter_members(chunks, where, offset), where):
            want = next(expected, None)
            if sample.key != want:
                raise ManifestError(f"{where}: index expects sample {want!r}, the shard has {sample.key!r}")
            count += 1
            yield sample
        if count != stop - start:
            raise ManifestError(f"{where}: expected {stop - start} samples from {start}, read {count}")

    def prefetch_span(self, shard: int, start: int, stop: int) -> Future[int] | None:
        entry = self.shards[shard]
        if entry.index is not None and start < stop:
            offset, length = entry.index.span(start, stop)
            return self.client.prefetch(entry.ref, offset, length)
        return self.client.prefetch(entry.ref)  # not indexed yet: the reader scans it all

    def describe(self) -> list[str]:
        lines = super().describe() + [f"Shards: {len(self.shards)}"]
        if self.meta.get("name"):
            lines.insert(0, f"Name: {self.meta['name']}")
        return lines


def shard_from_cid(cid: CID, root: IPFSPath, label: str) -> TarShard:
    return TarShard(IPFSPath(cid, "", root.gateway), label)
