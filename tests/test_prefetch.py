"""Background prefetch: ``Client.prefetch`` fills the verified cache from a real loopback
gateway, and ``IPFSIterableDataset`` uses it to fetch the next shard while one streams."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch
from dagbuild import export_small_images, small_images
from faultproxy import FaultProxy
from gatewayserver import running_gateway
from torch.utils.data import DataLoader

from torch_ipfs.client import Client
from torch_ipfs.dag import walk_dfs
from torch_ipfs.datasets import IPFSIterableDataset
from torch_ipfs.errors import IPFSError
from torch_ipfs.sharding import prefetch_lead
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.reader import UnixFSFile

SAMPLES, PER_SHARD = 60, 20


def _images() -> list:
    return small_images(SAMPLES, seed=7, classes=5)


@pytest.fixture(scope="module")
def exported():
    """60 images in 3 tar shards, 4 KiB chunks (several leaves per shard), in a counting store."""
    return export_small_images(SAMPLES, PER_SHARD, seed=7, classes=5)


@pytest.fixture
def gateway(exported):
    store, _ = exported
    with running_gateway(store) as srv:
        store.fetched.clear()
        yield srv


def _blocks_of(store: MemoryStore, cid) -> set:
    return {c for c, _ in walk_dfs(store, cid)}


def test_no_prefetch_without_a_remote_source(tmp_path, exported):
    _, result = exported
    assert Client(home=tmp_path, api="", gateways=[]).prefetch(result.shard_cids[0]) is None


def test_prefetch_fills_the_cache_and_the_read_then_fetches_nothing(tmp_path, exported, gateway):
    store, result = exported
    shard = result.shard_cids[1]
    expected, blocks = UnixFSFile(store, shard).read(), _blocks_of(store, shard)
    store.fetched.clear()
    with FaultProxy(gateway.url) as proxy:
        client = Client(home=tmp_path, api="", gateways=[proxy.url])
        future = client.prefetch(shard)
        assert future.result(timeout=30) == result.shard_bytes[1] == len(expected)
        # one CAR request for root and leaves (serve reads the root once more: it answers
        # 404 before its 200); every block sent once
        assert [p.split("?")[1] for p in proxy.requests] == ["format=car&dag-scope=entity"]
        assert Counter(store.fetched) == Counter(blocks) + Counter([shard])
        store.fetched.clear()
        assert client.cat(shard) == expected
        assert store.fetched == [] and len(proxy.requests) == 1


def test_prefetch_of_a_range_fetches_what_reading_that_range_fetches(tmp_path, exported, gateway):
    store, result = exported
    shard = result.shard_cids[0]
    offset, length = 10_000, 9_000
    Client(home=tmp_path / "a", api="", gateways=[gateway.url]).prefetch(shard, offset, length).result(30)
    prefetched = set(store.fetched)
    store.fetched.clear()
    Client(home=tmp_path / "b", api="", gateways=[gateway.url]).cat(shard, offset, length)
    assert prefetched == set(store.fetched)
    assert len(prefetched) < len(_blocks_of(store, shard))  # a range, not the whole shard


def test_prefetch_failure_stays_in_the_future(tmp_path, exported):
    _, result = exported
    with running_gateway(MemoryStore()) as empty:
        client = Client(home=tmp_path, api="", gateways=[empty.url])
        future = client.prefetch(result.shard_cids[0])  # submitting never raises
        assert isinstance(future.exception(timeout=60), IPFSError)


def test_iterable_dataset_prefetches_the_next_shard_while_reading_one(tmp_path, exported, gateway):
    store, result = exported
    client = Client(home=tmp_path, api="", gateways=[gateway.url])
    shards = [_blocks_of(store, cid) for cid in result.shard_cids]
    second_shard, only_in_third = shards[1], shards[2] - shards[0] - shards[1]
    store.fetched.clear()
    ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
    it = iter(ds)
    lead = prefetch_lead(PER_SHARD)
    assert lead == 5  # a quarter of the span
    head = [next(it) for _ in range(lead - 1)]
    time.sleep(0.3)  # the prefetch waits for the lead: not one block of shard 2 yet
    second_leaves = second_shard - shards[0] - {result.shard_cids[1]}
    assert second_leaves and not second_leaves & set(store.fetched)
    head.append(next(it))
    deadline = time.monotonic() + 30
    while not second_shard <= set(store.fetched):  # arrives without us reading further
        assert time.monotonic() < deadline, "the next shard was never prefetched"
        time.sleep(0.01)
    # one shard ahead, no more (the open fetched each shard's root node and index)
    third_leaves = only_in_third - {result.shard_cids[2]}
    assert third_leaves and not third_leaves & set(store.fetched)
    rest = list(it)
    expected = _images()
    got = [*head, *rest]
    assert len(got) == SAMPLES
    for (image, label), (want_image, want_label) in zip(got, expected, strict=True):
        assert torch.equal(image, want_image) and label == want_label
    # the reader waited for the prefetch: no leaf fetched twice
    leaves = set().union(*shards) - set(result.shard_cids)
    assert {c: n for c, n in Counter(store.fetched).items() if c in leaves and n > 1} == {}


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_over_a_gateway_delivers_every_sample_once(tmp_path, exported, gateway, workers):
    _, result = exported
    client = Client(home=tmp_path, api="", gateways=[gateway.url])
    ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
    labels, images = [], []
    for image, label in DataLoader(ds, batch_size=7, num_workers=workers):
        images.append(image)
        labels.append(label)
    # two workers interleave their batches: compare as multisets of (label, pixels)
    pixels = [image.numpy().tobytes() for image in torch.cat(images)]
    got = sorted(zip(torch.cat(labels).tolist(), pixels, strict=True))
    assert got == sorted((label, image.numpy().tobytes()) for image, label in _images())
