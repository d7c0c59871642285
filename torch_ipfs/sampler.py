"""A distributed sampler for map-style datasets that keeps each rank on its own shards.

``DistributedSampler(shuffle=True)`` hands every rank a random ``1/world`` of the
indices; over remote storage that means every rank touches nearly every block of the
dataset, so each host downloads the *whole* dataset every epoch. :class:`ShardAwareSampler`
keeps DistributedSampler's guarantees but orders samples by shard:

1. the shards are permuted (seeded by ``(seed, epoch)``, the same on every rank) and the
   sequence is cut into ``world`` contiguous runs of equal sample count
   (:func:`torch_ipfs.sharding.plan_epoch`, the splitter the iterable datasets use; each
   rank computes only its own run, :func:`~torch_ipfs.sharding.plan_rank`);
2. rank ``r`` takes run ``r`` and shuffles its samples within consecutive windows of
   ``window`` samples.

So a host reads about ``1/world`` of the dataset's bytes per epoch (plus the blocks
where runs meet and the small index blocks every rank reads), instead of all of it.
Exactly once per epoch across ranks, equal counts per rank (padded by repeating samples
from the start of the epoch's order, or ``drop_last``), a new order each epoch
(``set_epoch``), and the same order for the same ``(seed, epoch)``. docs/ddp.md
describes the randomness trade-off.

The sampler needs only the number of samples in each shard, in the dataset's index
order (shard ``i``'s samples are the indices after those of shards ``0..i-1``): it
asks ``dataset.shard_sizes()``, else ``dataset.layout.shard_sizes()``, or takes the
list itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from torch_ipfs.sharding import check_int, distributed_context, epoch_seed, plan_rank, rank_sample_count

__all__ = ["ShardAwareSampler", "shard_sizes_of"]


def shard_sizes_of(dataset: Any) -> list[int]:
    """Samples per shard of ``dataset``: its ``shard_sizes()``, its layout's, or
    ``dataset`` itself when it is a sequence of counts."""
    for owner in (dataset, getattr(dataset, "layout", None)):
        method = getattr(owner, "shard_sizes", None)
        if callable(method):
            return [int(n) for n in method()]
    if isinstance(dataset, Sequence) and all(isinstance(n, int) for n in dataset):
        return list(dataset)
    raise TypeError(
        f"cannot find the shard sizes of {type(dataset).__name__}: pass a dataset with "
        "shard_sizes() (or a .layout with it), or the list of samples per shard"
    )


class ShardAwareSampler(Sampler[int]):
    """Indices for one DDP rank: its own contiguous run of shards, shuffled within windows.

    Args:
        dataset: a torch_ipfs dataset (``IPFSDataset``), anything with ``shard_sizes()``
            or ``.layout.shard_sizes()``, or the list of samples per shard.
        num_replicas: the world size (default: from ``torch.distributed`` / ``WORLD_SIZE``).
        rank: this rank (default: from ``torch.distributed`` / ``RANK``).
        shuffle: permute the shards and shuffle within windows (default True); False
            reads shards in order, each rank its contiguous part.
        seed: the same on every rank.
        drop_last: drop the last ``N mod world`` samples of the epoch's order instead of
            padding.
        window: shuffle samples within consecutive runs of this many (default: the
            largest shard's sample count). Larger mixes more and keeps more blocks in use
            at once; the bytes read per rank do not depend on it.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        window: int | None = None,
    ) -> None:
        self.shard_sizes = shard_sizes_of(dataset)
        sized = hasattr(dataset, "__len__") and not isinstance(dataset, Sequence)
        if sized and len(dataset) != sum(self.shard_sizes):
            total = sum(self.shard_sizes)
            raise ValueError(f"the shards hold {total} samples but len(dataset) is {len(dataset)}")
        env_rank, env_world = distributed_context()
        self.num_replicas = check_int("num_replicas", env_world if num_replicas is None else num_replicas, 1)
        self.rank = check_int("rank", env_rank if rank is None else rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(f"rank {self.rank} is not below num_replicas {self.num_replicas}")
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed, None)
        self.drop_last = bool(drop_last)
        largest = max(self.shard_sizes, default=1)
        self.window = check_int("window", max(1, largest) if window is None else window, 1)
        self.epoch = 0
        self._starts = [0]
        for n in self.shard_sizes:
            self._starts.append(self._starts[-1] + n)
        self.num_samples = rank_sample_count(self._starts[-1], self.num_replicas, self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (call it on every rank before each epoch)."""
        self.epoch = check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch, in the order they are yielded."""
        spans = plan_rank(  # this rank's run only: the others' are not planned here
            self.shard_sizes, self.rank, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle,
            drop_last=self.drop_last, world_size=self.num_replicas,
        )
        if not spans:
            return []
        order = torch.cat([
            torch.arange(self._starts[s.shard] + s.start, self._starts[s.shard] + s.stop) for s in spans
        ])
        if self.shuffle:
            gen = torch.Generator()
            gen.manual_seed(epoch_seed(self.seed, self.epoch, self.rank, 1) >> 1)  # 63 bits
            for lo in range(0, len(order), self.window):
                chunk = order[lo:lo + self.window]
                order[lo:lo + self.window] = chunk[torch.randperm(len(chunk), generator=gen)]
        return order.tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())
