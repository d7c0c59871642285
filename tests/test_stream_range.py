"""A range streamed from one CAR response (:meth:`Client.stream_range`): the bytes are
exactly the file's, over every DAG shape; a DataLoader worker's first span is one request
to a real loopback gateway; a CAR cut short, corrupted or halted by a fork still gives
the exact bytes (the rest block by block, every block verified)."""

from __future__ import annotations

import os
import random

import pytest
import torch
from dagbuild import export_small_images, file_node, pb_leaf, raw_leaf, small_images
from faultproxy import FaultProxy
from gatewayserver import running_gateway
from torch.utils.data import DataLoader

from torch_ipfs import client as client_module
from torch_ipfs.client import Client
from torch_ipfs.dag import walk_dfs
from torch_ipfs.datasets import IPFSIterableDataset
from torch_ipfs.errors import CARFormatError
from torch_ipfs.serve import car_blocks
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes
from torch_ipfs.unixfs.streamed import range_from_blocks

SIZE = 300_000


def _files(store: MemoryStore) -> list[tuple[object, bytes]]:
    """Files of every shape: raw and dag-pb leaves, one and two levels, a node with data
    of its own, the same leaf twice."""
    rng = random.Random(3)
    out = []
    for options in (
        ImportOptions(cid_version=1, chunker="size-4096"),
        ImportOptions(cid_version=0, chunker="size-1000", max_links=11),  # 3 levels
        ImportOptions(cid_version=1, chunker="size-65536", raw_leaves=False),
    ):
        data = rng.randbytes(SIZE)
        out.append((import_bytes(data, store, options).cid, data))
    a, b = rng.randbytes(5000), rng.randbytes(300)
    leaf_a, leaf_b = raw_leaf(store, a), pb_leaf(store, b)
    inner, _ = file_node(store, [leaf_a, leaf_b], data=b"head")  # data of its own, then children
    root, _ = file_node(store, [(inner, 5304), leaf_a, (inner, 5304)])
    out.append((root, b"head" + a + b + a + b"head" + a + b))
    return out


def test_a_range_from_its_car_blocks_is_the_file_bytes() -> None:
    store = MemoryStore()
    rng = random.Random(5)
    for root, data in _files(store):
        ranges = [(0, len(data)), (1, 2), (len(data) - 1, len(data))]
        ranges += [tuple(sorted(rng.sample(range(len(data) + 1), 2))) for _ in range(25)]
        for lo, hi in ranges:
            if lo == hi:
                continue
            for dups in (True, False):
                blocks = car_blocks(store, root, [], scope="entity", entity_bytes=(lo, hi - 1), dups=dups)
                fetched = []

                def fetch(cid, fetched=fetched):
                    fetched.append(cid)
                    return store.get(cid)

                got = b"".join(range_from_blocks(iter(blocks), root, lo, hi, fetch))
                assert got == data[lo:hi], (root, lo, hi, dups)
                if dups:
                    assert fetched == []  # every block came in the response


def test_a_response_that_ends_early_is_completed_block_by_block() -> None:
    store = MemoryStore()
    root, data = _files(store)[0]
    blocks = list(car_blocks(store, root, [], scope="entity", entity_bytes=(10, SIZE - 11), dups=True))
    for cut in (0, 1, len(blocks) // 2, len(blocks) - 1):
        fetched = []

        def fetch(cid, fetched=fetched):
            fetched.append(cid)
            return store.get(cid)

        got = b"".join(range_from_blocks(iter(blocks[:cut]), root, 10, SIZE - 10, fetch))
        assert got == data[10 : SIZE - 10]
        assert fetched == [cid for cid, _ in blocks[cut:]]  # exactly the missing ones, in order


def test_blocks_left_over_or_out_of_place_are_refused() -> None:
    store = MemoryStore()
    root, data = _files(store)[0]
    blocks = list(car_blocks(store, root, [], scope="entity", entity_bytes=(0, 9999), dups=True))
    with pytest.raises(CARFormatError, match="after the end of the range"):
        b"".join(range_from_blocks(iter(blocks + blocks[-1:]), root, 0, 10_000, store.get))
    # a block the walk does not expect: fetched in its place, then refused as left over
    swapped = [blocks[0], blocks[2], blocks[1], *blocks[3:]]
    with pytest.raises(CARFormatError):
        b"".join(range_from_blocks(iter(swapped), root, 0, 10_000, store.get))


# -- over a real gateway ---------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    store = MemoryStore()
    data = random.Random(9).randbytes(3 * 1024 * 1024)
    root = import_bytes(data, store, ImportOptions(cid_version=1, chunker="size-65536")).cid
    with running_gateway(store) as server, FaultProxy(server.url) as proxy:
        yield store, root, data, proxy


def _client(tmp_path, proxy) -> Client:
    return Client(home=tmp_path / "home", api="", gateways=[proxy.url], retry_budget=0)


def test_a_range_streams_in_one_request_and_is_cached(tmp_path, served) -> None:
    store, root, data, proxy = served
    client = _client(tmp_path, proxy)
    lo, hi = 100_000, 2_900_000
    stream = client.stream_range(root, lo, hi - lo)
    assert stream is not None
    assert b"".join(stream) == data[lo:hi]
    cars = [r for r in proxy.requests if "format=car" in r]
    assert len(cars) == 1 and "entity-bytes=100000%3A2899999" in cars[0]
    assert not [r for r in proxy.requests if "format=raw" in r and str(root) not in r]  # no leaf alone
    # cached: the same range again reads the cache, not the gateway
    assert client.stream_range(root, lo, hi - lo) is None
    before = len(proxy.requests)
    assert client.cat(root, lo, hi - lo) == data[lo:hi]
    assert len(proxy.requests) == before


def test_no_stream_locally_or_for_a_short_range(tmp_path, served) -> None:
    store, root, data, proxy = served
    assert _client(tmp_path, proxy).stream_range(root, 0, client_module.STREAM_MIN_BYTES - 1) is None
    local = Client(home=tmp_path / "local", api="", gateways=[])
    cid = local.add(data)
    assert local.stream_range(cid, 0, len(data)) is None  # the embedded store: nothing to stream


@pytest.mark.parametrize("fault", ["flip", "truncate", "drop_block"])
def test_a_bad_car_still_gives_the_exact_bytes(tmp_path, served, fault) -> None:
    store, root, data, proxy = served
    proxy.set(fault, only="car", times=1, index=5)
    stream = _client(tmp_path, proxy).stream_range(root, 0, len(data))
    assert stream is not None
    assert b"".join(stream) == data
    assert proxy.faults == 1
    assert [r for r in proxy.requests if "format=raw" in r]  # the rest came block by block


def test_a_fork_halts_the_stream_and_the_reader_goes_on_block_by_block(tmp_path, served) -> None:
    store, root, data, proxy = served
    stream = _client(tmp_path, proxy).stream_range(root, 0, len(data))
    assert stream is not None
    head = bytes(next(stream))
    pid = os.fork()  # the fork hook halts the stream's thread first
    if pid == 0:
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    raw_before = len([r for r in proxy.requests if "format=raw" in r])
    assert head + b"".join(bytes(c) for c in stream) == data
    assert len([r for r in proxy.requests if "format=raw" in r]) > raw_before


# -- a dataset's first span --------------------------------------------------------------------

SAMPLES, PER_SHARD = 48, 16


@pytest.fixture(scope="module")
def exported():
    return export_small_images(SAMPLES, PER_SHARD, seed=11, classes=7)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_readers_first_span_is_one_car_request(tmp_path, exported, monkeypatch, workers) -> None:
    store, result = exported
    monkeypatch.setattr(client_module, "STREAM_MIN_BYTES", 1)  # the test's shards are small
    with running_gateway(store) as server, FaultProxy(server.url) as proxy:
        client = Client(home=tmp_path / "home", api="", gateways=[proxy.url], retry_budget=0)
        ds = IPFSIterableDataset(f"ipfs://{result.cid}", client=client, decode="tensor")
        batches = list(DataLoader(ds, batch_size=8, num_workers=workers))
        streamed = [r for r in proxy.requests if "format=car" in r and "entity-bytes=0%3A" in r]
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches]).tolist()
    expected = small_images(SAMPLES, seed=11, classes=7)
    got = sorted(zip(labels, [i.numpy().tobytes() for i in images], strict=True))
    assert got == sorted((label, image.numpy().tobytes()) for image, label in expected)
    # each shard came in one CAR response: the readers' first spans streamed, the others
    # prefetched while the span before them was read; no leaf was asked for alone, nor a
    # shard's root node (the stream starts without it: it is the response's first block)
    shards = [str(c) for c in result.shard_cids]
    assert sorted(r.split("?")[0].rsplit("/", 1)[1] for r in streamed) == sorted(shards)
    blocks = {str(c) for shard in result.shard_cids for c, _ in walk_dfs(store, shard)}
    alone = [r for r in proxy.requests if "format=raw" in r and r.split("?")[0].rsplit("/", 1)[1] in blocks]
    assert blocks - set(shards) and alone == []


def test_a_streamed_shard_of_another_size_than_the_table_says_fails_before_any_sample(
    tmp_path, exported, monkeypatch
) -> None:
    # The stream starts without the shard's root node, so the table's size is checked
    # once the root has come with it: a table that lies about shard 0 fails the read
    # with a ManifestError, and no sample of that shard reaches the loop.
    from torch_ipfs.errors import ManifestError
    from torch_ipfs.formats import tarshards
    from torch_ipfs.formats.shardtable import ShardFile, ShardTable, encode_table

    store, result = exported
    monkeypatch.setattr(client_module, "STREAM_MIN_BYTES", 1)
    writer = Client(home=tmp_path / "writer", api="", gateways=[])
    for cid, block in ((c, store.get(c)) for c in {c for c, _ in walk_dfs(store, result.cid)}):
        writer.store.put(cid, block)
    table = ShardTable(writer.cat(f"{result.cid}/shard-table.bin"), "t")
    entries = [table.file_entry(i) for i in range(len(table.files))]
    e0 = entries[0]
    entries[0] = ShardFile(e0.tar_cid, e0.index_cid, e0.tar_bytes + 512, e0.samples, e0.index_bytes,
                           e0.index_sha256)  # fmt: skip
    lying = encode_table(entries, [(i, 0, e.samples) for i, e in enumerate(entries)])
    fields = {f["name"]: f["type"] for f in result.manifest["fields"]}
    manifest = tarshards.build_manifest_v2(writer.add(lying), lying, SAMPLES, len(entries), fields=fields,
                                           structure=result.manifest["structure"])  # fmt: skip
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "manifest.json").write_bytes(tarshards.encode_manifest(manifest))
    root = writer.add(folder)
    with running_gateway(writer.store) as server:
        client = Client(home=tmp_path / "home", api="", gateways=[server.url], retry_budget=0)
        ds = IPFSIterableDataset(f"ipfs://{root}", client=client, decode="tensor")
        got = []
        with pytest.raises(ManifestError, match=f"the manifest says {e0.tar_bytes + 512} bytes"):
            for sample in ds:
                got.append(sample)
    assert got == []  # shard 0 is the first read: nothing came before the error
