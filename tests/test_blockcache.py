"""The verified-block cache: bounded in bytes, least recently used out first, one budget
per job split across the workers of a real DataLoader, and empty in every worker (each
hashes the blocks it uses itself)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from torch_ipfs.cid import CID, RAW
from torch_ipfs.unixfs import blockcache
from torch_ipfs.unixfs.blockcache import ENTRY_OVERHEAD, VerifiedBlockCache
from torch_ipfs.unixfs.walk import decode_file_node


def _leaf(i: int, size: int = 1000):
    data = bytes([i % 256]) * size
    cid = CID.compute(data, RAW)
    return cid, decode_file_node(cid, data)


def test_the_cache_stays_within_its_bytes_and_evicts_the_least_recent():
    cost = 1000 + ENTRY_OVERHEAD
    cache = VerifiedBlockCache(3 * cost)
    leaves = [_leaf(i) for i in range(5)]
    for cid, node in leaves[:3]:
        cache.put(cid.multihash, node)
    assert len(cache) == 3 and cache.nbytes == 3 * cost
    assert cache.get(leaves[0][0].multihash) is leaves[0][1]  # now the most recent
    cache.put(leaves[3][0].multihash, leaves[3][1])  # evicts leaf 1, the least recent
    assert cache.get(leaves[1][0].multihash) is None
    assert all(cache.get(c.multihash) is n for c, n in (leaves[0], leaves[2], leaves[3]))
    assert cache.nbytes == 3 * cost <= cache.max_bytes
    big_cid, big = _leaf(9, size=4 * cost)
    cache.put(big_cid.multihash, big)  # larger than the whole bound: never kept
    assert cache.get(big_cid.multihash) is None and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    assert VerifiedBlockCache(0).max_bytes == 0


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "1.5")
    assert blockcache._configured_bytes() == 1536 * 1024
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "0")
    assert blockcache._configured_bytes() == 0
    monkeypatch.delenv("TORCH_IPFS_BLOCK_CACHE_MB")
    assert blockcache._configured_bytes() == blockcache.DEFAULT_MAX_BYTES == 512 << 20
    monkeypatch.setattr(blockcache, "sharing_workers", lambda: 4)  # unset: a worker's share is capped
    assert blockcache._configured_bytes() == blockcache.DEFAULT_WORKER_MAX_BYTES == 32 << 20
    monkeypatch.setattr(blockcache, "sharing_workers", lambda: 64)
    assert blockcache._configured_bytes() == (512 << 20) // 64
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "1024")  # set: the plain 1/W share
    monkeypatch.setattr(blockcache, "sharing_workers", lambda: 4)
    assert blockcache._configured_bytes() == 256 << 20
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="TORCH_IPFS_BLOCK_CACHE_MB must be a number of MiB"):
        blockcache._configured_bytes()


class CacheOfWorker(Dataset):
    """Item ``i``: the budget and the entry count of the cache of the process reading it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        cache = blockcache.default_cache()
        return torch.tensor([cache.max_bytes, len(cache)])


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_of_a_dataloader_has_its_share_of_the_budget(monkeypatch, workers):
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "60")
    monkeypatch.setattr(blockcache, "_cache", None)
    main = blockcache.default_cache()
    cid, node = _leaf(1)
    main.put(cid.multihash, node)  # the parent's entries are not inherited
    assert main.max_bytes == 60 << 20
    loader = DataLoader(CacheOfWorker(), batch_size=None, num_workers=workers, multiprocessing_context="fork")
    got = {tuple(t.tolist()) for t in loader}
    assert got == {((60 << 20) // workers, 0)}
