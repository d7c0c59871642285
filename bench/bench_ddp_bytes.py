"""Benchmark: bytes each host fetches per epoch for map-style DDP (issue 13).

    python bench/bench_ddp_bytes.py [--samples 1024] [--sample-kib 16] [--samples-per-shard 32]
                                    [--worlds 1,2,4] [--epochs 2]

One dataset (tar shards exported by torch_ipfs) is served by ``torch_ipfs.serve`` on
loopback. Each simulated host is one rank with its own empty ``TORCH_IPFS_HOME`` (so its
own verified cache) and its own gateway server that counts the block bytes it sends.
The rank reads its epoch's samples (``IPFSDataset.read_raw``, the bytes a DataLoader
worker would read) in the order its sampler gives:

- ``ShardAwareSampler`` (torch_ipfs.sampler): contiguous shards per rank, shuffled
  within windows;
- ``DistributedSampler(shuffle=True)`` (torch): a random 1/world of the indices.

Reported per world size and sampler: bytes fetched per host in epoch 0 (cold cache) and
in epoch 1 (what the warm cache still lacked), as a fraction of the dataset's bytes
(every block of its DAG), and that fraction times the world size. Goal: shard-aware
<= 1.3 / world per host in epoch 0 (times world <= 1.3).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DistributedSampler

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.dag import walk_dfs
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.exporter import export
from torch_ipfs.sampler import ShardAwareSampler
from torch_ipfs.serve import make_server
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.sources.local import LocalStore

GOAL = 1.3


class CountingSource(BlockSource):
    """The served store, counting the block bytes handed to the gateway (= sent)."""

    def __init__(self, inner: BlockSource) -> None:
        self.inner, self.name = inner, inner.name
        self.bytes = 0
        self._lock = threading.Lock()

    def _get_raw(self, cid: CID) -> bytes:
        data = self.inner.get(cid)
        with self._lock:
            self.bytes += len(data)
        return data


class _Samples:
    """Sample ``i``: ``{"data": <sample_bytes pseudo-random bytes>}``."""

    def __init__(self, n: int, sample_bytes: int) -> None:
        self.n, self.sample_bytes = n, sample_bytes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        seed = hashlib.sha256(str(i).encode()).digest()
        return {"data": (seed * (self.sample_bytes // 32 + 1))[: self.sample_bytes]}


@dataclass(frozen=True)
class Row:
    sampler: str
    world: int
    epoch: int
    per_host: list[int]  # bytes fetched by each rank in this epoch
    dataset_bytes: int

    @property
    def fraction(self) -> float:
        """The largest host's bytes as a fraction of the dataset."""
        return max(self.per_host) / self.dataset_bytes


def make_dataset(work: Path, samples: int, sample_kib: int, samples_per_shard: int) -> tuple[Path, CID, int]:
    """Export the dataset into a store under ``work``: ``(store dir, root, DAG bytes)``."""
    home = work / "server"
    with Client(home=home, api="", gateways=[]) as client:
        root = export(_Samples(samples, sample_kib * 1024), samples_per_shard=samples_per_shard,
                      destination="store", client=client, progress=False)
        total = sum(len(block) for _, block in walk_dfs(client.store, root, dedupe=True))
    return home, root, total


def measure(
    work: Path, store_home: Path, root: CID, dataset_bytes: int, sampler: str, world: int, epochs: int
) -> list[Row]:
    """Bytes each of ``world`` simulated hosts fetches per epoch with ``sampler``."""
    per_epoch: list[list[int]] = [[0] * world for _ in range(epochs)]
    store = LocalStore(store_home)
    for rank in range(world):
        counting = CountingSource(store)
        server = make_server(counting, port=0)
        server.start()
        try:
            home = work / f"{sampler}-w{world}-r{rank}"
            with Client(home=home, api="", gateways=[server.url]) as client:
                dataset = IPFSDataset(f"ipfs://{root}", client=client)
                if sampler == "shard-aware":
                    order: ShardAwareSampler | DistributedSampler = ShardAwareSampler(
                        dataset, num_replicas=world, rank=rank, seed=0)
                else:
                    order = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
                for epoch in range(epochs):
                    order.set_epoch(epoch)
                    before = counting.bytes
                    for index in order:
                        dataset.read_raw(int(index))
                    per_epoch[epoch][rank] = counting.bytes - before
        finally:
            server.shutdown()
            server.server_close()
    return [Row(sampler, world, e, per_epoch[e], dataset_bytes) for e in range(epochs)]


def report(rows: list[Row]) -> str:
    lines = [
        "| sampler | world | epoch | max bytes/host | fraction of dataset | x world | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        goal = ""
        if r.sampler == "shard-aware" and r.epoch == 0:
            goal = "met" if r.fraction * r.world <= GOAL else "MISSED"
        lines.append(
            f"| {r.sampler} | {r.world} | {r.epoch} | {max(r.per_host):,} | {r.fraction:.3f} | "
            f"{r.fraction * r.world:.2f} | {goal} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--sample-kib", type=int, default=16)
    parser.add_argument("--samples-per-shard", type=int, default=32)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    worlds = [int(w) for w in args.worlds.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-ddp-bytes-") as tmp:
        work = Path(tmp)
        store_home, root, total = make_dataset(work, args.samples, args.sample_kib, args.samples_per_shard)
        print(f"dataset {root}: {args.samples} samples x {args.sample_kib} KiB, "
              f"{args.samples_per_shard} per shard, {total:,} bytes in its DAG")
        rows = [row for sampler in ("shard-aware", "DistributedSampler") for world in worlds
                for row in measure(work, store_home, root, total, sampler, world, args.epochs)]
    print(report(rows))
    missed = [r for r in rows if r.sampler == "shard-aware" and r.epoch == 0 and r.fraction * r.world > GOAL]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
