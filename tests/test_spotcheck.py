"""Spot checks behind the verified-block cache: a leaf evicted from the cache leaves the
SHA-256 of each 4 KiB piece behind, and a later ``ds[i]`` reads only the pieces it needs
back from the store's block file. Every byte handed out still equals a byte that matched
the CID: a changed, cut or missing block file is caught (IntegrityError, or a whole-block
fetch) and the digests stay within their share of the budget."""

from __future__ import annotations

import os
import random

import pytest
import torch
from dagbuild import GrowingTensors
from torch.utils.data import DataLoader

from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.errors import BlockNotFoundError, IntegrityError
from torch_ipfs.exporter import export_dataset
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.unixfs import blockcache
from torch_ipfs.unixfs.blockcache import SPOT_PIECE, VerifiedBlockCache, stored_data_offset
from torch_ipfs.unixfs.importer import ImportOptions
from torch_ipfs.unixfs.walk import FileNode, decode_file_node
from torch_ipfs.varint import encode_varint

LEAF = 262_144
_RAW_LEAF = CID.decode("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")


def growing_bytes(n: int) -> GrowingTensors:
    """Sample ``i``: ``(3000 + 11 * i bytes of value i % 251, i % 7)``."""
    return GrowingTensors(n, base=3000, step=11, dtype=torch.uint8, modulo=251, classes=7)


def _export(tmp_path, n=400, **import_options):
    client = Client(home=tmp_path / "home", api="", gateways=[])
    options = ImportOptions(**import_options) if import_options else None
    result = export_dataset(growing_bytes(n), samples_per_shard=n, client=client, progress=False,
                            import_options=options)  # fmt: skip
    return client, result


def _small_cache(monkeypatch, leaves: float) -> VerifiedBlockCache:
    cache = VerifiedBlockCache(int(leaves * (LEAF + 400)))
    monkeypatch.setattr(blockcache, "_cache", cache)
    return cache


def _leaves(client, result) -> list[CID]:
    """The leaves of shard 0's tar, in file order."""
    file = client.file(f"{result.cid}/shards/shard-000000.tar")
    return list(file._root.links)


def test_evicted_leaves_are_read_back_in_pieces_and_equal_the_strict_read(tmp_path, monkeypatch):
    client, result = _export(tmp_path)
    strict = IPFSDataset(result.url, client=client, decode="raw")
    want = [strict.layout._read_sample_strict(i) for i in range(len(strict))]
    cache = _small_cache(monkeypatch, 1.5)  # room for one leaf of a shard of ~9 leaves
    ds = IPFSDataset(result.url, client=client, decode="raw")
    order = list(range(len(ds)))
    for seed in (1, 2):
        random.Random(seed).shuffle(order)
        for i in order:
            assert ds[i] == tuple(want[i].fields[f] for f in ("npy", "cls")), i
    assert cache.spot_hits > len(order) // 2  # most reads of the second pass went by digests
    assert 0 < cache.digest_bytes <= cache.max_digest_bytes
    assert cache.nbytes <= cache.max_bytes


def _spot_ready(tmp_path, monkeypatch):
    """An export of one shard, sample 0 read, its leaf evicted (digests made)."""
    client, result = _export(tmp_path)
    cache = _small_cache(monkeypatch, 1.5)
    ds = IPFSDataset(result.url, client=client, decode="raw")
    first = ds[0]
    (key,) = [k for k in cache._offsets]  # sample 0's leaf, spot-checkable
    ds[len(ds) - 1]  # another leaf: the first is evicted
    assert key in cache._digests and key not in cache._items
    path = client.store._block_path(key)
    return client, ds, cache, first, key, path


def _flip(path: str, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x40]))


def test_a_changed_byte_in_the_piece_read_is_caught(tmp_path, monkeypatch):
    client, ds, cache, first, key, path = _spot_ready(tmp_path, monkeypatch)
    offset = cache._digests[key][0]
    hits = cache.spot_hits
    assert ds[0] == first and cache.spot_hits == hits + 1  # read back by digests
    _flip(path, offset + 100)  # inside sample 0's header (piece 0)
    with pytest.raises(IntegrityError):
        ds[0]  # the piece fails its digest, the whole block then fails its CID
    assert key not in cache._digests  # dropped, never trusted again


def test_a_changed_byte_elsewhere_in_the_piece_is_caught_too(tmp_path, monkeypatch):
    client, ds, cache, first, key, path = _spot_ready(tmp_path, monkeypatch)
    offset = cache._digests[key][0]
    ds[0]
    sample_end = len(first[0]) + 3 * 512  # well inside piece 0..1, past the header
    _flip(path, offset + SPOT_PIECE - 1 if sample_end > SPOT_PIECE else offset + sample_end)
    with pytest.raises(IntegrityError):
        ds[0]


def test_a_cut_or_missing_block_file_falls_back_to_the_whole_block(tmp_path, monkeypatch):
    client, ds, cache, first, key, path = _spot_ready(tmp_path, monkeypatch)
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "r+b") as fh:
        fh.truncate(cache._digests[key][0] + 10)  # the pieces cannot be read whole
    with pytest.raises(IntegrityError):
        ds[0]
    with open(path, "wb") as fh:
        fh.write(data)
    assert ds[0] == first  # fetched whole, hashed, cached again
    cache.put(b"other", FileNode(_RAW_LEAF, bytes(LEAF), (), (), (), LEAF))  # evicts it again
    assert key in cache._digests and key not in cache._items
    ds[0]  # read back by digests: the store now holds the file open
    os.unlink(path)
    assert ds[0] == first  # the open file still reads the old bytes, and they pass the digests
    client.store.close()  # closes the files kept open for reads
    with pytest.raises(BlockNotFoundError):
        ds[0]  # the file is gone: not found, not some other bytes


class _Plain(BlockSource):
    """The same store behind the plain BlockSource interface (no ``read_stored``)."""

    name = "plain"

    def __init__(self, inner: BlockSource) -> None:
        self.inner = inner

    def _get_raw(self, cid: CID) -> bytes:
        return self.inner.get(cid)


def test_sources_that_cannot_read_back_never_use_digests(tmp_path, monkeypatch):
    client, result = _export(tmp_path)
    cache = _small_cache(monkeypatch, 1.5)
    reader = Client(home=tmp_path / "reader", sources=[_Plain(client.store)])
    ds = IPFSDataset(result.url, client=reader, decode="raw")
    for i in (0, len(ds) - 1, 0):
        ds[i]
    assert cache.spot_hits == 0 and not cache._digests and not cache._offsets


@pytest.mark.parametrize("options", [{}, {"raw_leaves": True, "cid_version": 1}])
def test_stored_data_offset_finds_the_leaf_bytes_in_real_blocks(tmp_path, options):
    client, result = _export(tmp_path, **options)
    leaves = _leaves(client, result)
    assert len(leaves) >= 5
    for cid in leaves:
        block = client.store.get(cid)
        node = decode_file_node(cid, block)
        offset = stored_data_offset(cid, block, node.data)
        assert offset is not None and block[offset : offset + len(node.data)] == node.data
        trailer = 0 if options else 1 + len(encode_varint(len(node.data)))  # 18 <filesize>
        assert offset == (0 if options else len(block) - len(node.data) - trailer)
        other = bytes(node.data[:-1]) + bytes([node.data[-1] ^ 1])
        if not options:  # a raw leaf's bytes are its block; a dag-pb header is confirmed
            assert stored_data_offset(cid, block, other) is None
    if not options:  # a dag-pb block laid out some other way: not spot-checkable
        block = client.store.get(leaves[0])
        data = decode_file_node(leaves[0], block).data
        assert stored_data_offset(leaves[0], b"\x12" + block[1:], data) is None


def test_the_digests_stay_within_their_share_and_drop_the_least_recent():
    cache = VerifiedBlockCache(3 * (LEAF + 400))
    per_leaf = LEAF // SPOT_PIECE * 32 + blockcache.ENTRY_OVERHEAD
    assert cache.max_digest_bytes == cache.max_bytes // blockcache.DIGEST_SHARE
    room = cache.max_digest_bytes // per_leaf
    made = []
    for i in range(room + 50):
        data = bytes([i % 256]) * LEAF
        key = b"k%d" % i
        cache.put(key, FileNode(_RAW_LEAF, data, (), (), (), LEAF), data_offset=0)
        made.append(key)
        assert cache.digest_bytes <= cache.max_digest_bytes
        assert cache.nbytes <= cache.max_bytes
    kept = list(cache._digests)
    assert len(kept) == room and kept == made[-3 - room : -3]  # the newest evicted ones
    offset, size, digests = cache._digests[kept[-1]]
    assert (offset, size, len(digests)) == (0, LEAF, LEAF // SPOT_PIECE * 32)


def test_a_dataloader_with_workers_and_a_small_budget_sees_every_sample_once(tmp_path, monkeypatch):
    client, result = _export(tmp_path)
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "0.6")  # ~ one leaf per worker
    ds = IPFSDataset(result.url, client=client, decode="raw")
    want = sorted(ds[i] for i in range(len(ds)))
    loader = DataLoader(ds, batch_size=None, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert sorted(tuple(sample) for sample in loader) == want


def test_the_store_keeps_a_bounded_number_of_block_files_open(tmp_path):
    from torch_ipfs.sources.local import LocalStore, ReadHandles

    store = LocalStore(tmp_path / "store")
    blocks = [bytes([i]) * (1000 + i) for i in range(40)]
    cids = [CID.compute(b) for b in blocks]
    store.put_many(zip(cids, blocks))
    store._read_handles = ReadHandles(max_open=8)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for cid, block in zip(cids, blocks):
            assert store.read_stored(cid, 10, 50) == block[10:60]
            assert len(os.listdir("/proc/self/fd")) - before <= 8
    assert store.read_stored(cids[0], len(blocks[0]) - 5, 50) == blocks[0][-5:]  # short at the end
    missing = CID.decode("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert store.read_stored(missing, 0, 10) is None
    store.close()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_the_verified_disk_cache_reads_back_what_it_holds_and_pickles_without_handles(tmp_path):
    import pickle

    from torch_ipfs.sources.base import MemoryStore
    from torch_ipfs.sources.cache import CachedSource

    remote = MemoryStore()
    block = bytes(range(256)) * 40
    cid = CID.compute(block)
    remote.put(cid, block)
    cache = CachedSource(remote, tmp_path / "cache")
    assert cache.reads_stored and cache.read_stored(cid, 0, 10) is None  # not cached yet
    assert cache.get(cid) == block
    assert cache.read_stored(cid, 300, 100) == block[300:400]
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._read_handles._fds == {} and copy.read_stored(cid, 5, 5) == block[5:10]
    cache.close()
    assert cache._read_handles._fds == {}


@pytest.mark.parametrize(("size", "digests"), [(60_000, True), (70_000, False)])
def test_leaves_take_digests_when_first_read_for_at_most_a_quarter(tmp_path, monkeypatch, size, digests):
    """A 60 KB sample (under 1/4 of a 256 KiB leaf) is worth a spot read (about 64 KiB
    hashed instead of 256 KiB); a 70 KB one is not, and its leaf is re-hashed instead."""
    client = Client(home=tmp_path / "home", api="", gateways=[])
    data = GrowingTensors(12, base=size, step=0, dtype=torch.uint8, modulo=251, classes=7)
    result = export_dataset(data, samples_per_shard=12, client=client, progress=False)
    cache = _small_cache(monkeypatch, 1.2)  # one leaf: reading another evicts it
    ds = IPFSDataset(result.url, client=client, decode="raw")
    first = ds[0]
    ds[len(ds) - 1]
    assert bool(cache._digests) is digests
    hits = cache.spot_hits
    assert ds[0] == first
    assert cache.spot_hits == hits + digests
