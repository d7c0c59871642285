"""Findings 2, 3, 8 and 10 of issue 10: well-hashed DAGs built to hurt a walker.

Every shape is built with the real dag-pb codec and read through the real reader,
the real CAR walk of ``serve``, the real verifier and the real server over loopback.
"""

from __future__ import annotations

import httpx
import pytest
from dagbuild import directory, file_node, pb_leaf, put_pb, raw_leaf
from gatewayserver import running_gateway

from torch_ipfs.car import CarReader
from torch_ipfs.carverify import CarBlockVerifier
from torch_ipfs.cid import CID
from torch_ipfs.client import Client
from torch_ipfs.dagpb import PBLink, PBNode
from torch_ipfs.errors import UnixFSFormatError
from torch_ipfs.serve import car_blocks
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.hamt import shard_data
from torch_ipfs.unixfs.reader import UnixFSFile, ls
from torch_ipfs.unixfs.walk import MAX_DAG_DEPTH, MAX_HAMT_DEPTH, decode_file_node

DEEP = 3000  # past the old recursion limit (~1,000 frames) and past MAX_DAG_DEPTH


def shared_shard_hamt(store: MemoryStore, levels: int = 4) -> CID:
    """``levels`` shard nodes whose 256 buckets all link the same child shard, over a
    bottom shard of 256 entries: 256**(levels+1) entries claimed from levels+2 blocks."""
    leaf, _ = raw_leaf(store, b"x")
    every = shard_data(range(256))
    node = put_pb(store, PBNode([PBLink(leaf, f"{b:02X}f{b}", 1) for b in range(256)], every))
    for _ in range(levels):
        node = put_pb(store, PBNode([PBLink(node, f"{b:02X}", 1) for b in range(256)], every))
    return node


def nested_shards(store: MemoryStore, depth: int) -> CID:
    leaf, _ = raw_leaf(store, b"x")
    node = put_pb(store, PBNode([PBLink(leaf, "00f", 1)], shard_data([0])))
    for _ in range(depth):
        node = put_pb(store, PBNode([PBLink(node, "00", 1)], shard_data([0])))
    return node


def directory_chain(store: MemoryStore, depth: int) -> CID:
    node = directory(store, {"f": raw_leaf(store, b"bottom")[0]})
    for _ in range(depth):
        node = directory(store, {"d": node})
    return node


def file_chain(store: MemoryStore, depth: int) -> tuple[CID, int]:
    node = raw_leaf(store, b"z")
    for _ in range(depth):
        node = file_node(store, [node])
    return node


# -- finding 2: exponential HAMT listing --------------------------------------------------


def test_a_hamt_sharing_one_child_shard_is_refused_after_reading_a_few_blocks(tmp_path):
    store = MemoryStore()
    root = shared_shard_hamt(store)  # 2**40 entries claimed, 6 blocks
    assert len(store.blocks) == 6
    with pytest.raises(UnixFSFormatError, match="appears twice"):
        ls(store, root)
    with Client(home=tmp_path / "home", sources=[store]) as client:
        with pytest.raises(UnixFSFormatError, match="appears twice"):
            client.ls(root)
        with pytest.raises(UnixFSFormatError, match="appears twice"):
            client.get(root, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    with running_gateway(store) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        resp = http.get(f"/ipfs/{root}/")  # the HTML listing
        assert resp.status_code == 500 and "appears twice" in resp.text


def test_a_listing_over_the_entry_limit_is_refused(monkeypatch):
    store = MemoryStore()
    leaf, _ = raw_leaf(store, b"x")
    root = directory(store, {f"n{i}": leaf for i in range(50)})
    assert len(ls(store, root, max_entries=50)) == 50
    with pytest.raises(UnixFSFormatError, match="more than 49 entries"):
        ls(store, root, max_entries=49)
    monkeypatch.setenv("TORCH_IPFS_MAX_LISTING_ENTRIES", "10")
    with pytest.raises(UnixFSFormatError, match="TORCH_IPFS_MAX_LISTING_ENTRIES"):
        ls(store, root)


# -- finding 3: recursion on attacker depth ------------------------------------------------


def test_nested_hamt_shards_deeper_than_the_hash_are_refused():
    store = MemoryStore()
    with pytest.raises(UnixFSFormatError, match=f"deeper than {MAX_HAMT_DEPTH}"):
        ls(store, nested_shards(store, DEEP))
    ok = nested_shards(store, MAX_HAMT_DEPTH - 1)  # 8 levels in all: the most a real HAMT has
    assert [e.name for e in ls(store, ok)] == ["f"]


@pytest.mark.parametrize("scope", ["all", "entity"])
def test_car_walks_over_deep_chains_are_typed_errors_not_recursion(scope):
    store = MemoryStore()
    dirs = directory_chain(store, DEEP)
    blocks = car_blocks(store, dirs, [], scope="all")
    with pytest.raises(UnixFSFormatError, match=f"more than {MAX_DAG_DEPTH} levels"):
        list(blocks)
    chain, size = file_chain(store, DEEP)
    entity_bytes = (0, None) if scope == "entity" else None
    with pytest.raises(UnixFSFormatError, match=f"more than {MAX_DAG_DEPTH} levels"):
        list(car_blocks(store, chain, [], scope=scope, entity_bytes=entity_bytes))
    with pytest.raises(UnixFSFormatError, match=f"more than {MAX_DAG_DEPTH} levels"):
        UnixFSFile(store, chain).read()


def test_deep_but_allowed_chains_are_walked_the_same_by_server_and_verifier():
    store = MemoryStore()
    chain, size = file_chain(store, 1500)  # deeper than Python's recursion limit
    assert UnixFSFile(store, chain).read() == b"z"
    for scope, entity in (("all", None), ("entity", None), ("entity", (0, 0))):
        sent = list(car_blocks(store, chain, [], scope=scope, entity_bytes=entity))
        assert len(sent) == 1501
        verifier = CarBlockVerifier(chain, scope=scope, entity_bytes=entity)
        for cid, block in sent:
            verifier.push(cid, block)
        verifier.finish()


def test_the_server_cuts_a_too_deep_car_and_keeps_serving():
    store = MemoryStore()
    dirs = directory_chain(store, DEEP)
    small = directory_chain(store, 2)
    with running_gateway(store) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/ipfs/{dirs}?format=car").read()
        resp = http.get(f"/ipfs/{small}?format=car")
        assert resp.status_code == 200
        assert len(list(CarReader(iter([resp.content])))) == 4


# -- finding 8: a lying blocksize of 0 -------------------------------------------------------


def test_a_zero_blocksize_cannot_hide_a_child():
    store = MemoryStore()
    hidden = raw_leaf(store, b"HIDDEN")[0]
    shown = raw_leaf(store, b"abc")
    root, _ = file_node(store, [(hidden, 0), shown], blocksizes=[0, 3], filesize=3)
    with pytest.raises(UnixFSFormatError, match="blocksize 0"):
        UnixFSFile(store, root).read()
    with pytest.raises(UnixFSFormatError, match="blocksize 0"):
        decode_file_node(root, store.get(root))
    with pytest.raises(UnixFSFormatError, match="blocksize 0"):
        list(car_blocks(store, root, [], scope="entity", entity_bytes=(0, None)))


# -- finding 10: server and verifier agree on a dag-pb node without UnixFS Data ----------------


def test_entity_bytes_on_a_non_unixfs_node_is_the_block_for_both():
    store = MemoryStore()
    leaf = pb_leaf(store, b"data")[0]
    plain = put_pb(store, PBNode([PBLink(leaf, "x", 10)], None), version=1)
    sent = list(car_blocks(store, plain, [], scope="entity", entity_bytes=(0, 10)))
    assert [c for c, _ in sent] == [plain]
    verifier = CarBlockVerifier(plain, entity_bytes=(0, 10))
    for cid, block in sent:
        verifier.push(cid, block)
    verifier.finish()
    assert verifier.count == 1
