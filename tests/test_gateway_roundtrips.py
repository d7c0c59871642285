"""Round trips of a sharded dataset read through a trustless gateway: a real loopback
``torch_ipfs.serve`` behind a recording (and, where asked, corrupting) proxy.

What is counted is what a 50 ms link pays for: requests made one after the other. Opening
is one round trip of three parallel CAR requests: ``manifest.json``, the shard table and
the index directory (by the exporter's name); nothing is left for a background batch, so
a DataLoader's fork has nothing to wait for; a shard span then needs its root node and
leaves (a streamed span brings its root node in the stream). Every block is still
verified: a corrupted CAR is rejected block by block and the read falls back to single
blocks, a gateway that corrupts everything fails loudly, and every sample arrives exactly
once.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from dagbuild import export_small_images, small_images
from faultproxy import FaultProxy
from gatewayserver import running_gateway
from torch.utils.data import DataLoader

from torch_ipfs.client import Client
from torch_ipfs.dag import walk_dfs
from torch_ipfs.datasets import IPFSIterableDataset
from torch_ipfs.errors import IntegrityError
from torch_ipfs.unixfs.reader import UnixFSFile

SAMPLES, PER_SHARD = 48, 16


def _images() -> list:
    return small_images(SAMPLES, seed=11, classes=7)


@pytest.fixture(scope="module")
def exported():
    """48 images in 3 tar shards with 4 KiB leaves (several leaves per shard)."""
    return export_small_images(SAMPLES, PER_SHARD, seed=11, classes=7)


@pytest.fixture
def proxy(exported):
    store, _ = exported
    with running_gateway(store) as server, FaultProxy(server.url) as proxy:
        store.fetched.clear()
        yield proxy


def _client(tmp_path, proxy: FaultProxy) -> Client:
    return Client(home=tmp_path / "home", api="", gateways=[proxy.url], retry_budget=0)


def _query(path: str) -> str:
    return path.split("?", 1)[1] if "?" in path else ""


def _pixels(batches) -> list[tuple[int, bytes]]:
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches]).tolist()
    return sorted(zip(labels, [i.numpy().tobytes() for i in images], strict=True))


EXPECTED = sorted((label, image.numpy().tobytes()) for image, label in _images())


def test_open_is_one_round_trip_then_one_batch_then_each_span_its_leaves(tmp_path, exported, proxy):
    store, result = exported
    root = str(result.cid)
    ds = IPFSIterableDataset(f"ipfs://{root}", client=_client(tmp_path, proxy), decode="tensor")
    # opening: one CAR each for the manifest, the shard table and the index directory,
    # all sent together
    opened = list(proxy.requests)
    assert sorted(opened) == [
        f"/ipfs/{root}/index?format=car&dag-scope=all",
        f"/ipfs/{root}/manifest.json?format=car&dag-scope=entity",
        f"/ipfs/{root}/shard-table.bin?format=car&dag-scope=entity",
    ]
    # every index came with it: no background batch (a fork waits for none)
    assert ds.layout.warming is None
    assert len(proxy.requests) == len(opened)
    # the first span: its root node and leaves, no index, nothing twice
    before = len(proxy.requests)
    first = next(iter(DataLoader(ds, batch_size=PER_SHARD)))
    span = proxy.requests[before:]
    shard0 = result.shard_cids[0]
    leaves = {str(c) for c, _ in walk_dfs(store, shard0)}  # with the root node
    fetched = [p.split("?")[0].rsplit("/", 1)[1] for p in span if "format=raw" in p]
    # the root and every leaf but the last (only the tar's end-of-archive blocks), once each
    assert len(set(fetched)) == len(fetched) >= len(leaves) - 1 and set(fetched) <= leaves
    assert all(_query(p) == "format=raw" or "entity-bytes" in p for p in span)
    assert torch.equal(first[0], torch.stack([image for image, _ in _images()[:PER_SHARD]]))


def test_a_second_open_with_a_warm_cache_sends_nothing(tmp_path, exported, proxy):
    # every request of the open finds its blocks in the cache (walked there, verified),
    # and a path the cached root lacks is known to be absent: nothing is asked
    _, result = exported
    client = _client(tmp_path, proxy)
    assert client.warm_car(result.cid, "no-such-file") is False  # a 404 the first time
    IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
    before = len(proxy.requests)
    assert client.warm_car(result.cid, "no-such-file") is True  # the cached root lacks it
    ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=_client(tmp_path, proxy), decode="tensor")
    assert proxy.requests[before:] == [] and ds.layout.warming is None


def test_whole_pass_with_workers_every_sample_once_and_no_request_twice(tmp_path, exported, proxy):
    _, result = exported
    ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=_client(tmp_path, proxy), decode="tensor")
    got = _pixels(list(DataLoader(ds, batch_size=5, num_workers=2)))
    assert got == EXPECTED
    repeated = {p: n for p, n in Counter(proxy.requests).items() if n > 1}
    assert repeated == {}  # single flight across the main process and both workers
    # bounded: the open's 3 CARs, one CAR per prefetched span, the rest single blocks
    cars = [p for p in proxy.requests if "format=car" in p]
    assert len(cars) <= 3 + len(result.shard_cids)


def test_a_corrupted_car_is_rejected_and_the_read_falls_back_to_verified_blocks(tmp_path, exported, proxy):
    _, result = exported
    proxy.set("flip", only="car")  # every CAR's last byte flipped: a bad last block, status 200
    client = _client(tmp_path, proxy)
    ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
    got = _pixels(list(DataLoader(ds, batch_size=8)))
    assert got == EXPECTED  # not one wrong byte reached the loop
    assert proxy.faults >= 2  # the two CARs of the open, and the prefetched spans
    cache = client.source.sources[-1]
    assert cache.stats().dropped == 0  # nothing bad was ever written to the cache


def test_a_gateway_that_corrupts_every_block_fails_loudly(tmp_path, exported, proxy):
    _, result = exported
    proxy.set("flip")  # raw blocks and CARs alike
    with pytest.raises(IntegrityError):
        IPFSIterableDataset(f"ipfs://{result.cid}", client=_client(tmp_path, proxy), decode="tensor")


def test_a_corrupted_span_car_is_refetched_block_by_block(tmp_path, exported, proxy):
    store, result = exported
    client = _client(tmp_path, proxy)
    shard = result.shard_cids[2]
    proxy.set("flip", only="car", times=1)
    assert client.prefetch(shard, 100, 9000).result(timeout=30) == 9000
    assert proxy.faults == 1
    raw_after_car = [p for p in proxy.requests if "format=raw" in p]
    assert raw_after_car  # the blocks the bad CAR did not deliver, fetched and verified one by one
    before = len(proxy.requests)
    assert client.cat(shard, 100, 9000) == UnixFSFile(store, shard).read_range(100, 9000)
    assert len(proxy.requests) == before  # all from the cache now


def test_the_same_car_request_from_two_clients_sharing_a_cache_is_made_once(tmp_path, exported, proxy):
    _, result = exported
    shard = result.shard_cids[1]
    proxy.set("delay", only="car", seconds=0.5)  # the first request holds its claim meanwhile
    a, b = _client(tmp_path, proxy), _client(tmp_path, proxy)  # one home: one cache directory
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda c: c.warm_car(shard), [a, b]))
    assert done == [True, True]
    assert [p for p in proxy.requests if "format=car" in p] == [f"/ipfs/{shard}?format=car&dag-scope=entity"]
    before = len(proxy.requests)
    assert b.cat(shard) == a.cat(shard) and len(b.cat(shard)) == result.shard_bytes[1]
    assert len(proxy.requests) == before


def test_a_car_request_stops_reading_at_its_byte_cap(tmp_path, exported, proxy):
    _, result = exported
    shard = result.shard_cids[0]  # 41 KiB in 4 KiB leaves
    client = _client(tmp_path, proxy)
    assert client.warm_car(shard, max_bytes=6000) is False  # abandoned: not everything cached
    cache = client.source.sources[-1]
    assert 6000 < cache.bytes_filled <= 6000 + 4096  # the root node and the leaf that passed the cap
    assert cache.stats().bytes_written == cache.bytes_filled


def test_the_opening_batch_is_one_round_trip_of_the_gateway_connections(tmp_path):
    # 20 shards and 16 connections: the open's one round of requests (manifest, table,
    # index directory) brings all the warm-up of a streaming dataset wants, so nothing is
    # left to fetch in a second round (a fork would wait for it, delaying every worker).
    # A map-style dataset also warms the root nodes of tars over 2 MiB (none here).
    store, result = export_small_images(40, 2, seed=3, classes=5)
    with running_gateway(store) as server, FaultProxy(server.url) as proxy:
        client = Client(home=tmp_path / "home", api="", gateways=[proxy.url], retry_budget=0)
        assert client.fetch_width == 16
        ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
        assert len(ds.layout.table.files) == 20
        assert len(proxy.requests) == 3 and ds.layout.warming is None
        got = _pixels(list(DataLoader(ds, batch_size=8, num_workers=2)))
    assert got == sorted((label, image.numpy().tobytes()) for image, label in small_images(40, 3, 5))


def test_the_opens_index_directory_request_is_capped(tmp_path):
    # A hostile root whose "index" directory holds 12 MiB: the open's speculative request
    # for it stops after WARM_INDEX_BYTES (4 MiB), and the dataset opens as usual (its
    # indexes are the ones its shard table names, fetched when needed).
    import os

    from dagbuild import directory

    from torch_ipfs.formats.detect import WARM_INDEX_BYTES
    from torch_ipfs.unixfs.importer import import_bytes
    from torch_ipfs.unixfs.reader import ls

    store, result = export_small_images(16, 8, seed=5, classes=3)
    big = import_bytes(os.urandom(12 * 1024 * 1024), store)
    entries = {e.name: e.cid for e in ls(store, result.cid, resolve_types=False)}
    entries["index"] = directory(store, {"big.bin": big.cid})
    root = directory(store, entries)
    leaves = {c for c, _ in walk_dfs(store, big.cid)} - {big.cid}
    with running_gateway(store) as server:
        client = Client(home=tmp_path / "home", api="", gateways=[server.url], retry_budget=0)
        ds = IPFSIterableDataset(f"ipfs://{root}", client=client, decode="tensor")
        cache = client.source.sources[-1]
        cached = sum(cache.holds(c) for c in leaves)
        assert 0 < cached <= WARM_INDEX_BYTES // (256 * 1024) + 1
        got = _pixels(list(DataLoader(ds, batch_size=4)))
    assert got == sorted((label, image.numpy().tobytes()) for image, label in small_images(16, 5, 3))


def test_a_map_style_dataset_warms_the_tar_roots_a_streaming_one_not(tmp_path, exported, monkeypatch):
    # Root nodes are warmed only for tars over MAX_BLOCK_SIZE (a smaller tar's "root" may
    # be all its data); lowered here so these small tars count as big ones.
    from torch_ipfs.datasets import IPFSDataset
    from torch_ipfs.formats import tarshards

    _, result = exported
    monkeypatch.setattr(tarshards, "MAX_BLOCK_SIZE", 1024)
    with running_gateway(exported[0]) as server, FaultProxy(server.url) as proxy:
        stream = IPFSIterableDataset(f"ipfs://{result.cid}", client=_client(tmp_path / "a", proxy))
        assert stream.layout.warming is None  # the open brought the indexes; no roots wanted
        before = len(proxy.requests)
        ds = IPFSDataset(f"ipfs://{result.cid}", client=_client(tmp_path / "b", proxy))
        assert ds.layout.warming is not None
        assert ds.layout.warming.result(timeout=30) == len(result.shard_cids)
        raw = sorted(p.split("?")[0].rsplit("/", 1)[1] for p in proxy.requests[before:] if "format=raw" in p)
    assert raw == sorted(str(c) for c in result.shard_cids)  # each tar's root node, nothing else
