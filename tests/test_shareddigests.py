"""The spot-check digests a DataLoader's forked workers share (torch_ipfs.unixfs.shareddigests).

A leaf verified by one worker is spot-checked by its siblings (and by the workers of the
next epochs) instead of being fetched and hashed whole again; a stale, torn or forged
entry never hands out other bytes.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os

import pytest
import torch
from dagbuild import GrowingTensors
from torch.utils.data import DataLoader, Dataset

from torch_ipfs.client import Client
from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.errors import IntegrityError
from torch_ipfs.exporter import export_dataset
from torch_ipfs.unixfs import blockcache, shareddigests
from torch_ipfs.unixfs.shareddigests import MAX_DIGESTS, PROBES, SLOT, SharedDigestTable

KEY = b"\x12\x20" + hashlib.sha256(b"leaf").digest()
DIGESTS = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(MAX_DIGESTS))


def test_an_entry_reads_back_as_published():
    table = SharedDigestTable(1 << 20)
    assert table.lookup(KEY) is None
    assert table.publish(KEY, 14, 262_144, DIGESTS)
    assert table.lookup(KEY) == (14, 262_144, DIGESTS)
    short = DIGESTS[: 3 * 32]  # a leaf of 3 pieces
    assert table.publish(KEY, 0, 9_000, short)  # the same key again: replaced in place
    assert table.lookup(KEY) == (0, 9_000, short)


def test_entries_that_do_not_fit_are_not_shared():
    table = SharedDigestTable(1 << 20)
    assert not table.publish(b"\x12" * 64, 0, 1, DIGESTS[:32])  # key over 63 bytes
    assert not table.publish(KEY, 0, 1, DIGESTS + DIGESTS[:32])  # over 64 pieces (256 KiB)
    assert not table.publish(KEY, 0, 1, DIGESTS[:31])  # not whole digests
    assert not table.publish(KEY, 1 << 32, 1, DIGESTS[:32])
    assert table.lookup(KEY) is None


def test_a_full_neighbourhood_refuses_more_keys():
    table = SharedDigestTable(PROBES * SLOT)  # exactly PROBES slots: every key probes all
    keys = [b"\x12\x20" + hashlib.sha256(bytes([i])).digest() for i in range(PROBES + 1)]
    assert [table.publish(k, 0, 4096, DIGESTS[:32]) for k in keys] == [True] * PROBES + [False]
    assert [table.lookup(k) is not None for k in keys] == [True] * PROBES + [False]


@pytest.mark.parametrize("at", [1, 34, 70, 80, shareddigests._BODY, shareddigests._BODY + 31])
def test_a_torn_or_changed_entry_is_taken_as_absent(at):
    """A byte of the entry that differs from what was sealed (the key's first and last
    byte, the leaf's size, a digest, the first and last byte of the seal) makes it count
    as never published."""
    table = SharedDigestTable(SLOT)
    table.publish(KEY, 14, 262_144, DIGESTS)
    table._map[at] ^= 0x01
    assert table.lookup(KEY) is None


def test_forked_children_write_into_the_parents_table():
    table = SharedDigestTable(1 << 20)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=table.publish, args=(KEY, 14, 262_144, DIGESTS))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert table.lookup(KEY) == (14, 262_144, DIGESTS)


def _entry_of(key: bytes) -> tuple[int, int, bytes]:
    digests = b"".join(hashlib.sha256(key + bytes([i])).digest() for i in range(MAX_DIGESTS))
    return key[-1], 262_144, digests


def _publish_over_and_over(table: SharedDigestTable, keys: list[bytes], rounds: int) -> None:
    for _ in range(rounds):
        for key in keys:
            table.publish(key, *_entry_of(key))


def test_writers_racing_over_the_same_slots_never_make_a_wrong_entry_readable():
    """Two processes keep rewriting 12 keys into a neighbourhood of 8 slots while this one
    reads: every lookup gives that key's own entry or None, never a mix."""
    table = SharedDigestTable(PROBES * SLOT)
    keys = [b"\x12\x20" + hashlib.sha256(bytes([i])).digest()[:31] + bytes([i]) for i in range(12)]
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_publish_over_and_over, args=(table, keys[i::2], 400)) for i in range(2)]
    for w in writers:
        w.start()
    found = 0
    while any(w.is_alive() for w in writers):
        for key in keys:
            got = table.lookup(key)
            if got is not None:
                assert got == _entry_of(key)
                found += 1
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    assert found > 0


def test_the_table_is_made_once_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(shareddigests, "_table", None)
    monkeypatch.setenv("TORCH_IPFS_SHARED_DIGESTS_MB", "0")
    assert shareddigests.share_with_forked_children() is None
    monkeypatch.setenv("TORCH_IPFS_SHARED_DIGESTS_MB", "1")
    made = shareddigests.share_with_forked_children()
    assert made is not None and made.slots == (1 << 20) // SLOT
    assert shareddigests.share_with_forked_children() is made
    monkeypatch.setenv("TORCH_IPFS_SHARED_DIGESTS_MB", "lots")
    monkeypatch.setattr(shareddigests, "_table", None)
    with pytest.raises(ValueError, match="TORCH_IPFS_SHARED_DIGESTS_MB"):
        shareddigests.share_with_forked_children()


# -- through a DataLoader with forked workers -------------------------------------------


class _Counting(Dataset):
    """``ds[i]`` with the reading worker's cache counters: (pid, leaves hashed whole,
    leaves taken from the shared table)."""

    def __init__(self, ds: IPFSDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        sample = self.ds[i]
        c = blockcache.default_cache()
        return i, sample, (os.getpid(), c.misses - c.spot_hits, c.shared_hits)


def _epoch(ds: IPFSDataset, seed: int, workers: int = 2):
    """One shuffled epoch: ({index: sample}, {worker pid: (hashed, shared)})."""
    loader = DataLoader(_Counting(ds), batch_size=None, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    samples, counters = {}, {}
    for i, sample, (pid, hashed, shared) in loader:
        assert i not in samples
        samples[i] = tuple(sample)  # the loader hands tuples on as lists
        counters[pid] = (hashed, shared)
    return samples, counters


@pytest.fixture()
def exported(tmp_path, monkeypatch):
    """400 samples of ~5 KB in one shard of 9 leaves; a fresh shared table; each worker's
    cache holds about one leaf, so nearly every read goes by digests."""
    monkeypatch.setattr(shareddigests, "_table", None)
    monkeypatch.setenv("TORCH_IPFS_BLOCK_CACHE_MB", "0.6")
    client = Client(home=tmp_path / "home", api="", gateways=[])
    data = GrowingTensors(400, base=3000, step=11, dtype=torch.uint8, modulo=251, classes=7)
    result = export_dataset(data, samples_per_shard=400, client=client, progress=False)
    ds = IPFSDataset(result.url, client=client, decode="raw")
    leaves = client.file(f"{result.cid}/shards/shard-000000.tar")._root.links
    want = {i: ds.layout._read_sample_strict(i) for i in range(len(ds))}
    return client, ds, leaves, {i: tuple(raw.fields[f] for f in ("npy", "cls")) for i, raw in want.items()}


def test_workers_share_what_each_verified_and_the_next_epoch_hashes_nothing(exported):
    client, ds, leaves, want = exported
    assert shareddigests.shared_table() is not None  # made by the dataset, before any fork
    first, counters = _epoch(ds, seed=0)
    assert first == want
    assert len(counters) == 2
    # each leaf was hashed whole by at least one worker, and taken from the table by some
    assert sum(h for h, _ in counters.values()) >= len(leaves)
    assert sum(s for _, s in counters.values()) > 0
    second, counters = _epoch(ds, seed=1)  # new workers, forked from the same parent
    assert second == want
    assert [h for h, _ in counters.values()] == [0, 0]  # not one leaf fetched and hashed
    assert all(s > 0 for _, s in counters.values())


def test_a_single_worker_leaves_its_digests_to_the_next_epochs_worker(exported):
    client, ds, leaves, want = exported
    first, counters = _epoch(ds, seed=0, workers=1)
    assert first == want
    assert [s for _, s in counters.values()] == [0]  # nobody else had verified anything
    second, counters = _epoch(ds, seed=1, workers=1)
    assert second == want
    assert [h for h, _ in counters.values()] == [0]
    assert [s for _, s in counters.values()] == [len(leaves)]  # every leaf, once


def test_a_block_changed_on_disk_after_it_was_shared_is_caught(exported):
    client, ds, leaves, want = exported
    first, _ = _epoch(ds, seed=0)
    assert first == want
    path = client.store._block_path(leaves[0].multihash)
    with open(path, "r+b") as fh:  # a byte inside sample 0 (its first header)
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(IntegrityError):
        _epoch(ds, seed=1)  # the piece fails the shared digest, the whole block its CID


def test_with_sharing_off_each_worker_hashes_every_leaf_it_uses(exported, monkeypatch):
    client, ds, leaves, want = exported
    monkeypatch.setattr(shareddigests, "_table", None)  # as with TORCH_IPFS_SHARED_DIGESTS_MB=0
    first, counters = _epoch(ds, seed=0)
    assert first == want
    assert [s for _, s in counters.values()] == [0, 0]
    assert all(h >= len(leaves) - 1 for h, _ in counters.values())
