"""The trustless-gateway CAR verifier: each block must be the one its own DFS walk of
the requested DAG (path, dag-scope, entity-bytes, dups) expects next."""

from __future__ import annotations

import io
import os

import pytest
from dagbuild import CountingStore

from torch_ipfs.car import CarReader, write_car
from torch_ipfs.carverify import CarBlockVerifier, parse_entity_bytes, verify_car_stream
from torch_ipfs.cid import CID, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.dagpb import decode_node
from torch_ipfs.errors import CARFormatError, IntegrityError, PathNotFoundError
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_tree
from torch_ipfs.unixfs.reader import UnixFSFile, decode_file_node, resolve_path


def _multilevel(store: MemoryStore, data: bytes, **opts) -> CID:
    options = ImportOptions(chunker="size-64", max_links=4, **opts)
    return import_bytes(data, store, options).cid


def _car_stream(blocks: list[tuple[CID, bytes]], root: CID) -> CarReader:
    out = io.BytesIO()
    write_car(out, [root], blocks)
    return CarReader(io.BytesIO(out.getvalue()))


def _range_dfs(store: MemoryStore, cid: CID, lo: int, hi: int, start: int = 0) -> list[CID]:
    """What a server sends for entity-bytes: the node, then children overlapping [lo, hi)."""
    node = decode_file_node(cid, store.get(cid))
    out = [cid]
    for i, child in enumerate(node.links):
        cs = start + node.offsets[i]
        if cs < hi and cs + node.sizes[i] > lo:
            out += _range_dfs(store, child, lo, hi, cs)
    return out


def test_verifier_accepts_a_full_dag_and_collects_blocks() -> None:
    store = MemoryStore()
    root = import_tree({"a": os.urandom(300), "d/b": os.urandom(500), "d/c": b""}, store,
                       ImportOptions(chunker="size-64", max_links=3))
    blocks = list(walk_dfs(store, root))
    verifier = CarBlockVerifier(root)
    for cid, block in _car_stream(blocks, root):
        assert verifier.expected == cid
        verifier.push(cid, block)
    verifier.finish()
    assert verifier.done and verifier.blocks == blocks
    assert list(verify_car_stream(_car_stream(blocks, root), root)) == blocks


@pytest.mark.parametrize("fault", ["swap", "extra", "truncate", "tamper", "foreign"])
def test_verifier_rejects_bad_streams(fault: str) -> None:
    store = MemoryStore()
    data = os.urandom(64 * 12)
    root = _multilevel(store, data)
    blocks = list(walk_dfs(store, root))
    if fault == "swap":
        blocks[2], blocks[3] = blocks[3], blocks[2]
    elif fault == "extra":
        blocks.append((CID.compute(b"x", RAW), b"x"))
    elif fault == "truncate":
        blocks = blocks[:-1]
    elif fault == "foreign":
        blocks[3] = (CID.compute(b"y", RAW), b"y")
    else:
        cid, block = blocks[3]
        blocks[3] = (cid, block[:-1] + bytes([block[-1] ^ 1]))
    out = io.BytesIO()
    write_car(out, [root], blocks)
    reader = CarReader(io.BytesIO(out.getvalue()), verify=False)  # let the verifier see it
    error = IntegrityError if fault == "tamper" else CARFormatError
    match = {"swap": "out of order", "extra": "unexpected", "truncate": "truncated",
             "foreign": "out of order", "tamper": "verification"}[fault]
    with pytest.raises(error, match=match):
        list(verify_car_stream(reader, root))


@pytest.mark.parametrize(
    "entity_bytes",
    [(0, None), (0, 0), (100, 199), (64 * 9 + 5, 64 * 30), (-100, None), (10, -10), (64, 127)],
)
def test_verifier_entity_bytes_expects_only_covering_blocks(entity_bytes: tuple[int, int | None]) -> None:
    base = MemoryStore()
    data = os.urandom(64 * 30 + 7)
    file_root = _multilevel(base, data, cid_version=1)
    options = ImportOptions(chunker="size-64", max_links=4, cid_version=1)
    root = import_tree({"dir/file.bin": data}, base, options)
    assert resolve_path(base, root, "dir/file.bin") == file_root
    size = len(data)
    start, end = entity_bytes
    lo = start if start >= 0 else size + start
    hi = (size if end is None else (end + 1 if end >= 0 else size + end + 1))
    path_blocks = [root, resolve_path(base, root, "dir")]
    expected = path_blocks + _range_dfs(base, file_root, lo, hi)
    # independently: the reader fetches exactly that set for the same range
    counting = CountingStore(base)
    assert UnixFSFile(counting, file_root).read_range(lo, hi - lo) == data[lo:hi]
    assert set(counting.fetched) == set(expected[2:])
    stream = [(c, base.get(c)) for c in expected]
    got = list(verify_car_stream(stream, root, path="dir/file.bin", entity_bytes=entity_bytes))
    assert [c for c, _ in got] == expected
    # a server that sends the whole file instead is caught
    whole = path_blocks + [c for c, _ in walk_dfs(base, file_root)]
    if whole != expected:
        with pytest.raises(CARFormatError):
            list(verify_car_stream([(c, base.get(c)) for c in whole], root, path="dir/file.bin",
                                   entity_bytes=entity_bytes))


def test_verifier_range_outside_the_file_is_the_root_block_only() -> None:
    store = MemoryStore()
    root = _multilevel(store, os.urandom(500))
    got = list(verify_car_stream([(root, store.get(root))], root, entity_bytes="1000:*"))
    assert [c for c, _ in got] == [root]
    assert parse_entity_bytes("-5:*") == (-5, None)
    with pytest.raises(ValueError):
        parse_entity_bytes("5")


def test_verifier_dups() -> None:
    store = MemoryStore()
    root = _multilevel(store, bytes(64 * 20))  # leaves (and inner nodes) repeat
    with_dups = list(walk_dfs(store, root, dedupe=False))
    without = list(walk_dfs(store, root))
    assert len(with_dups) > len(without)
    assert list(verify_car_stream(with_dups, root, dups=True)) == with_dups
    assert list(verify_car_stream(without, root, dups=False)) == without
    with pytest.raises(CARFormatError):
        list(verify_car_stream(with_dups, root, dups=False))
    with pytest.raises(CARFormatError):
        list(verify_car_stream(without, root, dups=True))
    # a range over repeated leaves with dups=n: each distinct block once, in first-seen order
    expected = list(dict.fromkeys(_range_dfs(store, root, 100, 64 * 15)))
    got = verify_car_stream([(c, store.get(c)) for c in expected], root, entity_bytes=(100, 64 * 15 - 1))
    assert [c for c, _ in got] == expected
    # ... holding only inner nodes to re-walk the duplicates, not the bytes of the range
    verifier = CarBlockVerifier(root, entity_bytes=(100, 64 * 15 - 1), dups=False, on_block=lambda c, b: None)
    for cid in expected:
        verifier.push(cid, store.get(cid))
    verifier.finish()
    assert verifier._walk._inner and all(decode_node(b).links for b in verifier._walk._inner.values())


def test_verifier_hamt_paths_and_scopes() -> None:
    store = MemoryStore()
    names = {f"f{i:03d}": f"{i}".encode() * 3 for i in range(400)}
    root = import_tree(names, store, ImportOptions(hamt_threshold=500, cid_version=1))
    counting = CountingStore(store)
    target = resolve_path(counting, root, "f123")
    path_blocks = counting.fetched + [target]
    assert len(path_blocks) >= 2
    stream = [(c, store.get(c)) for c in path_blocks]
    for scope in ("block", "entity", "all"):  # a raw file: the same blocks for every scope
        got = list(verify_car_stream(stream, root, path="f123", scope=scope))
        assert [c for c, _ in got] == path_blocks
    # entity of a HAMT directory: every shard node, none of the entries
    shards = [c for c, b in walk_dfs(store, root) if c.codec != RAW]
    got = list(verify_car_stream([(c, store.get(c)) for c in shards], root, scope="entity"))
    assert len(got) == len(shards) > 1
    with pytest.raises(PathNotFoundError):
        list(verify_car_stream(stream, root, path="nope"))
    # scope=block stops at the terminal: a following block is unexpected
    with pytest.raises(CARFormatError, match="unexpected"):
        list(verify_car_stream(stream + stream[-1:], root, path="f123", scope="block"))
