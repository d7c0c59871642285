"""ShardAwareSampler: DistributedSampler's guarantees (exactly once, equal counts, padding
or drop_last, per-epoch reshuffle, deterministic), but each rank on its own shards, so
a host fetches about 1/world of the dataset per epoch (checked on a real exported
dataset through a real loopback gateway)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from bench.bench_ddp_bytes import make_dataset, measure
from torch_ipfs import ShardAwareSampler
from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.sharding import plan_epoch

LAYOUTS = [
    [10] * 12,
    [1, 7, 0, 13, 2, 30, 6],  # uneven, one empty shard
    [5, 3],  # fewer shards than ranks
    [64],
]


def _shard_of(sizes: list[int]) -> list[int]:
    return [s for s, n in enumerate(sizes) for _ in range(n)]


@pytest.mark.parametrize("sizes", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_exactly_once_and_equal_counts_like_distributed_sampler(sizes, world, drop_last):
    total = sum(sizes)
    for epoch in range(3):
        per_rank = []
        for rank in range(world):
            sampler = ShardAwareSampler(sizes, world, rank, seed=7, drop_last=drop_last)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            # the count DistributedSampler gives, for the same arguments
            ref = DistributedSampler(range(total), world, rank, shuffle=True, drop_last=drop_last)
            assert len(per_rank[-1]) == len(sampler) == len(ref)
        seen = Counter(i for r in per_rank for i in r)
        if drop_last:
            assert sum(seen.values()) == world * (total // world) and max(seen.values()) == 1
        else:
            assert set(seen) == set(range(total))
            padded = world * math.ceil(total / world) - total
            assert sum(seen.values()) - total == padded  # padding repeats, like DistributedSampler


def test_deterministic_per_seed_and_epoch_and_reshuffled_each_epoch():
    sizes = [10] * 12

    def order(seed: int, epoch: int, rank: int = 1) -> list[int]:
        s = ShardAwareSampler(sizes, 3, rank, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    assert set(order(1, 0)) != set(order(1, 1))  # ranks get other shards each epoch


def test_each_rank_reads_a_contiguous_run_of_shards_shuffled_within_windows():
    sizes = [10] * 20
    shard = _shard_of(sizes)
    for epoch in range(4):
        plan = plan_epoch(sizes, seed=3, epoch=epoch, shuffle=True, world_size=4)
        for rank in range(4):
            sampler = ShardAwareSampler(sizes, 4, rank, seed=3, window=10)
            sampler.set_epoch(epoch)
            got = list(sampler)
            assert len({shard[i] for i in got}) <= 50 // 10 + 1  # its share, split at most once
            # only the order within each window of 10 positions is shuffled
            spans = plan[rank]
            unshuffled = [sum(sizes[:s.shard]) + k for s in spans for k in range(s.start, s.stop)]
            for lo in range(0, len(got), 10):
                assert sorted(got[lo:lo + 10]) == sorted(unshuffled[lo:lo + 10])
            assert got != unshuffled


def test_reads_shard_sizes_from_a_dataset_and_refuses_a_mismatch(tmp_path):
    work = tmp_path / "work"
    store_home, root, _ = make_dataset(work, 40, 1, 8)
    with Client(home=store_home, api="", gateways=[]) as client:
        dataset = IPFSDataset(f"ipfs://{root}", client=client)
        sampler = ShardAwareSampler(dataset, num_replicas=2, rank=0)
        assert sampler.shard_sizes == [8] * 5 and len(sampler) == 20
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=list)
        assert sum(len(b) for b in loader) == 20
    with pytest.raises(ValueError, match="rank 2 is not below num_replicas 2"):
        ShardAwareSampler([3, 3], num_replicas=2, rank=2)
    with pytest.raises(TypeError, match="shard sizes"):
        ShardAwareSampler(object(), num_replicas=1, rank=0)


def test_a_host_fetches_about_one_world_th_of_the_dataset(tmp_path):
    """4 simulated hosts, each with its own cache and a counting gateway: shard-aware
    keeps each within 1.3/4 of the dataset's bytes; DistributedSampler fetches nearly all."""
    work = tmp_path / "work"
    store_home, root, total = make_dataset(work, 256, 4, 16)  # 1 MiB, 16 shards
    (aware,) = measure(work, store_home, root, total, "shard-aware", 4, epochs=1)
    (spread,) = measure(work, store_home, root, total, "DistributedSampler", 4, epochs=1)
    assert aware.fraction * 4 <= 1.3, aware.per_host
    assert spread.fraction > 0.8, spread.per_host
