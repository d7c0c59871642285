"""Hand-built UnixFS DAGs for reader and CAR tests, including deliberately broken ones.

The importer builds realistic DAGs; these helpers build the shapes it never makes
(inner nodes with their own data, lying blocksizes, directories inside files) with the
real dag-pb codec, store the blocks in a real store and return their CIDs.
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, encode_node
from torch_ipfs.sources.base import MemoryStore


def put_pb(store: MemoryStore, node: PBNode, *, version: int = 0) -> CID:
    block = encode_node(node)
    cid = CID.compute(block, DAG_PB, version=version)
    store.put(cid, block)
    return cid


def raw_leaf(store: MemoryStore, data: bytes) -> tuple[CID, int]:
    cid = CID.compute(data, RAW)
    store.put(cid, data)
    return cid, len(data)


def pb_leaf(store: MemoryStore, data: bytes) -> tuple[CID, int]:
    fs = UnixFSData(DataType.File, data=data, filesize=len(data))
    return put_pb(store, PBNode([], fs.encode())), len(data)


def file_node(
    store: MemoryStore,
    children: list[tuple[CID, int]],
    data: bytes = b"",
    *,
    blocksizes: list[int] | None = None,
    filesize: int | None = -1,
    type_: DataType = DataType.File,
) -> tuple[CID, int]:
    """An inner file node over ``children`` (``(cid, file bytes)`` pairs). Override
    ``blocksizes``/``filesize`` to build inconsistent nodes (``filesize=None`` omits it)."""
    sizes = [size for _, size in children] if blocksizes is None else blocksizes
    total = len(data) + sum(size for _, size in children)
    size_field = total if filesize == -1 else filesize
    fs = UnixFSData(type_, data=data or None, filesize=size_field, blocksizes=sizes)
    links = [PBLink(cid, "", size) for cid, size in children]
    return put_pb(store, PBNode(links, fs.encode())), total


def directory(store: MemoryStore, entries: dict[str, CID]) -> CID:
    links = [PBLink(cid, name, 1) for name, cid in sorted(entries.items())]
    return put_pb(store, PBNode(links, UnixFSData(DataType.Directory).encode()))


def symlink(store: MemoryStore, target: str) -> CID:
    return put_pb(store, PBNode([], UnixFSData(DataType.Symlink, data=target.encode()).encode()))


class CountingStore(MemoryStore):
    """A real MemoryStore that records every CID fetched through ``get``."""

    name = "counting store"

    def __init__(self, store: MemoryStore | None = None) -> None:
        super().__init__()
        if store is not None:
            self.blocks = dict(store.blocks)
        self.fetched: list[CID] = []

    def _get_raw(self, cid: CID) -> bytes:
        self.fetched.append(cid)
        return super()._get_raw(cid)


def small_images(samples: int, seed: int, classes: int) -> list[tuple[Any, int]]:
    """``samples`` random 16x16 uint8 images, sample ``i`` labelled ``i % classes``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (samples, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return [(images[i], i % classes) for i in range(samples)]


def export_small_images(samples: int, per_shard: int, seed: int, classes: int) -> tuple[CountingStore, Any]:
    """:func:`small_images` exported in shards of ``per_shard`` with 4 KiB chunks (several
    leaves per shard) into a :class:`CountingStore`; returns the store and the result."""
    from torch_ipfs.exporter import export_dataset
    from torch_ipfs.unixfs.importer import ImportOptions

    store = CountingStore()
    result = export_dataset(
        small_images(samples, seed, classes), samples_per_shard=per_shard, destination=store,
        progress=False, import_options=ImportOptions(chunker="size-4096"),
    )  # fmt: skip
    return store, result


class GrowingTensors:
    """A map-style dataset of ``n`` samples whose sizes grow, so samples of an export sit
    across leaf boundaries: sample ``i`` is ``(torch.full((base + step * i,), i % modulo,
    dtype), i % classes)``."""

    def __init__(self, n: int, *, base: int, step: int, dtype: Any, modulo: int, classes: int) -> None:
        self.n, self.base, self.step = n, base, step
        self.dtype, self.modulo, self.classes = dtype, modulo, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.full((self.base + self.step * i,), i % self.modulo, dtype=self.dtype), i % self.classes
