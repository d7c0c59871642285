"""The sharded JSON layout: a root listing JSON shards, each holding a run of samples.

Root: ``{"shards": ["<cid>", ...], "samples_per_shard": k, "total_samples": n}``
(+ optional ``name``, ``version``); every shard but the last holds exactly ``k``
samples, the last ``n - k * (shards - 1)`` (between 1 and ``k``).
Shard: ``{"shard_id": i, "samples": [{...}, ...]}`` where ``i`` is its position.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from torch_ipfs.cid import IPFSPath
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import ClientHandle, Layout, RawSample, SampleSchema, json_sample
from torch_ipfs.formats.manifest import field, load_json, parse_cid

__all__ = ["ShardedJSONLayout", "is_shardedjson_manifest"]


def is_shardedjson_manifest(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("shards"), list) and "samples_per_shard" in obj


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
        meta = {k: manifest[k] for k in ("name", "version") if k in manifest}
        return cls(client, where, shards, per_shard, total, meta)

    def shard_sizes(self) -> list[int]:
        n = len(self.shards)
        return [self.per_shard] * (n - 1) + [self.total - self.per_shard * (n - 1)]

    def _shard(self, i: int) -> list[Any]:
        key = (os.getpid(), i)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        where = f"{self.where}: shard {i} ({self.shards[i].cid})"
        doc = load_json(self.cat(self.shards[i]), where)
        shard_id = field(doc, "shard_id", int, where)
        samples = field(doc, "samples", list, where)
        if shard_id != i:
            raise ManifestError(f"{where}: shard_id is {shard_id}, but it is listed as shard {i}")
        if len(samples) != self.shard_sizes()[i]:
            raise ManifestError(
                f"{where}: holds {len(samples)} samples, the root says {self.shard_sizes()[i]}"
            )
        self._loaded[key] = samples
        while len(self._loaded) > 2:
            self._loaded.popitem(last=False)
        return samples

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        samples = self._shard(shard)
        base = self.shard_starts()[shard]
        for i in range(start, stop):
            yield json_sample(samples[i], str(base + i))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_loaded"] = OrderedDict()
        return state
