"""The sharded JSON layout: a root listing JSON shards, each holding a run of samples.

Root: ``{"shards": ["<cid>", ...], "samples_per_shard": k, "total_samples": n}``
(+ optional ``shard_count``, ``name``, ``version``, ...); every shard but the last holds
exactly ``k`` samples, the last ``n - k * (shards - 1)`` (between 1 and ``k``).

Shard: ``{"shard_id": id, "sample_start_idx": a, "sample_end_idx": b, "samples": [...]}``.
What ``shard_id`` counts from is the writer's choice (ipfs_kit's own example numbers
its first shard 1, others 0): the first shard fixes the base and every later shard must
continue it (``base + position``). ``sample_start_idx`` / ``sample_end_idx`` (inclusive,
as in that example: 0 and 999 for the first 1000) are optional, and checked against the
shard's position when present. The first shard is read and checked when the dataset is
opened, so a manifest that cannot be read fails there, not sample by sample later.

A single shard document on its own (``{"shard_id", "samples"}``, ipfs_kit's "sequential
shard processing" loads each shard CID by itself) is a dataset of its samples.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from torch_ipfs.cid import IPFSPath
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import ClientHandle, Layout, ListLayout, RawSample, SampleSchema, json_sample
from torch_ipfs.formats.manifest import field, load_json, parse_cid

__all__ = ["ShardDocumentLayout", "ShardedJSONLayout", "is_shard_document", "is_shardedjson_manifest"]

_META = ("name", "version", "description", "created_at")


def is_shardedjson_manifest(obj: Any) -> bool:
    """A root listing shards, or one shard document on its own."""
    return (
        isinstance(obj, dict) and isinstance(obj.get("shards"), list) and "samples_per_shard" in obj
    ) or is_shard_document(obj)


def is_shard_document(obj: Any) -> bool:
    return isinstance(obj, dict) and "shard_id" in obj and isinstance(obj.get("samples"), list)


def open_shardedjson(client: ClientHandle, root: IPFSPath, manifest: Any, where: str) -> Layout:
    """The layout of a sharded-JSON root, or of a single shard document."""
    if is_shard_document(manifest):
        return ShardDocumentLayout.from_manifest(client, manifest, where)
    return ShardedJSONLayout.from_manifest(client, root, manifest, where)


class ShardedJSONLayout(Layout):
    """Samples in JSON shards listed by a root manifest (see the module docstring)."""

    name = "shardedjson"

    def __init__(self, client: ClientHandle, where: str, shards: list[IPFSPath], per_shard: int, total: int,
                 meta: dict[str, Any] | None = None):  # fmt: skip
        super().__init__(client, where)
        self.shards = shards
        self.per_shard = per_shard
        self.total = total
        self.meta = meta or {}
        self.schema = SampleSchema(structure="dict", with_key=False)
        self._loaded: OrderedDict[tuple[int, int], list[Any]] = OrderedDict()
        # a shard found inconsistent stays so: its other samples fail at once, unfetched
        self._broken: dict[int, ManifestError] = {}
        self._id_base: int | None = None
        # one fetch per shard when several threads read its samples at once (a loader's
        # fetch_workers); per process: a lock held by a thread at fork stays held in a child
        self._lock = (os.getpid(), threading.RLock())
        last = total - per_shard * (len(shards) - 1)
        if not shards or per_shard <= 0 or not 0 < last <= per_shard:
            raise ManifestError(
                f"{where}: {len(shards)} shards of {per_shard} samples cannot hold total_samples={total}"
            )

    @classmethod
    def from_manifest(
        cls, client: ClientHandle, root: IPFSPath, manifest: Any, where: str
    ) -> ShardedJSONLayout:
        cids = field(manifest, "shards", list, where)
        shards = [
            IPFSPath(parse_cid(c, f"{where}: shards[{i}]"), "", root.gateway) for i, c in enumerate(cids)
        ]
        per_shard = field(manifest, "samples_per_shard", int, where)
        total = field(manifest, "total_samples", int, where)
        count = field(manifest, "shard_count", int, where, required=False)
        if count is not None and count != len(shards):
            raise ManifestError(f"{where}: shard_count is {count}, but {len(shards)} shards are listed")
        meta = {k: manifest[k] for k in _META if k in manifest}
        layout = cls(client, where, shards, per_shard, total, meta)
        layout._shard(0)  # fixes the shard_id base; a bad manifest fails here, at open
        return layout

    def shard_sizes(self) -> list[int]:
        n = len(self.shards)
        return [self.per_shard] * (n - 1) + [self.total - self.per_shard * (n - 1)]

    def _shard(self, i: int) -> list[Any]:
        pid = os.getpid()
        if self._lock[0] != pid:
            self._lock = (pid, threading.RLock())
        with self._lock[1]:
            return self._shard_locked((pid, i))

    def _shard_locked(self, key: tuple[int, int]) -> list[Any]:
        i = key[1]
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        if i in self._broken:
            raise self._broken[i]
        where = f"{self.where}: shard {i} ({self.shards[i].cid})"
        doc = load_json(self.cat(self.shards[i]), where)
        try:
            samples = self._check(doc, i, where)
        except ManifestError as e:
            self._broken[i] = e
            raise
        self._loaded[key] = samples
        while len(self._loaded) > 2:
            self._loaded.popitem(last=False)
        return samples

    def _check(self, doc: Any, i: int, where: str) -> list[Any]:
        shard_id = field(doc, "shard_id", int, where)
        samples = field(doc, "samples", list, where)
        if self._id_base is None:
            if i != 0:  # a forked/spawned reader that never read shard 0
                self._shard(0)
            else:
                if shard_id not in (0, 1):
                    raise ManifestError(
                        f"{where}: shard_id is {shard_id}; the first shard is numbered 0 or 1"
                    )
                self._id_base = shard_id
        base = self._id_base
        assert base is not None
        if shard_id != base + i:
            raise ManifestError(
                f"{where}: shard_id is {shard_id}, but it is listed as shard {i} "
                f"(the first shard is numbered {base})"
            )
        size, start = self.shard_sizes()[i], self.shard_starts()[i]
        if len(samples) != size:
            raise ManifestError(f"{where}: holds {len(samples)} samples, the root says {size}")
        for name, expected in (("sample_start_idx", start), ("sample_end_idx", start + size - 1)):
            value = field(doc, name, int, where, required=False)
            if value is not None and value != expected:
                raise ManifestError(
                    f"{where}: {name} is {value}, but as shard {i} of {self.per_shard} samples "
                    f"it holds samples {start}..{start + size - 1}"
                )
        return samples

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        samples = self._shard(shard)
        base = self.shard_starts()[shard]
        for i in range(start, stop):
            yield json_sample(samples[i], str(base + i))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_loaded"] = OrderedDict()
        state["_broken"] = {}
        state["_lock"] = (-1, None)  # re-made on first use in the unpickling process
        return state


class ShardDocumentLayout(ListLayout):
    """One shard document read on its own: its ``samples``, keyed by their dataset-wide
    index (``sample_start_idx + i`` when the shard says where it starts)."""

    name = "shardedjson"

    def __init__(self, client: ClientHandle, where: str, samples: list[Any], start: int,
                 meta: dict[str, Any]) -> None:  # fmt: skip
        super().__init__(client, where)
        self.samples = samples
        self.start = start
        self.meta = meta
        self.schema = SampleSchema(structure="dict", with_key=False)

    @classmethod
    def from_manifest(cls, client: ClientHandle, manifest: Any, where: str) -> ShardDocumentLayout:
        shard_id = field(manifest, "shard_id", int, where)
        samples = field(manifest, "samples", list, where)
        start = field(manifest, "sample_start_idx", int, where, required=False)
        end = field(manifest, "sample_end_idx", int, where, required=False)
        if start is not None and end is not None and end - start + 1 != len(samples):
            raise ManifestError(
                f"{where}: sample_start_idx..sample_end_idx is {start}..{end} "
                f"({end - start + 1} samples), but it holds {len(samples)}"
            )
        return cls(client, where, samples, start or 0, {"shard_id": shard_id})

    def count(self) -> int:
        return len(self.samples)

    def read_item(self, i: int) -> RawSample:
        return json_sample(self.samples[i], str(self.start + i))
