"""UnixFS reader: byte ranges, streaming, file objects, directories, paths, strictness."""

from __future__ import annotations

import io
import os
import random

import pytest
from dagbuild import CountingStore, directory, file_node, pb_leaf, put_pb, raw_leaf, symlink

from torch_ipfs.cid import CID, DAG_PB
from torch_ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, decode_node
from torch_ipfs.errors import (
    BlockNotFoundError,
    IntegrityError,
    NotADirectoryError,  # noqa: A004
    NotAFileError,
    PathNotFoundError,
    UnixFSFormatError,
)
from torch_ipfs.sources.base import MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes, import_tree
from torch_ipfs.unixfs.reader import DirEntry, UnixFSFile, ls, resolve_path, stat

AOEU_CID = "QmRo11d4QJrST47aaiGVJYwPhoNA4ihRpJ5WaxBWjWDwbX"  # "aoeuidhtns"*200, size-4 (ipfs-facts)


def _random_ranges(f: UnixFSFile, data: bytes, rng: random.Random, n: int = 200) -> None:
    for _ in range(n):
        offset = rng.randrange(0, len(data) + 50)
        length = rng.randrange(0, 3 * 64 + 10)
        assert f.read_range(offset, length) == data[offset:offset + length], (offset, length)


def test_published_vector_reads_back() -> None:
    store = MemoryStore()
    data = b"aoeuidhtns" * 200
    entry = import_bytes(data, store, ImportOptions(chunker="size-4"))
    assert str(entry.cid) == AOEU_CID
    f = UnixFSFile(store, entry.cid)
    assert f.size == 2000
    assert f.read() == data
    assert b"".join(f.iter_chunks()) == data
    _random_ranges(f, data, random.Random(0))


@pytest.mark.parametrize("cid_version", [0, 1])
def test_multilevel_random_ranges(cid_version: int) -> None:
    store = MemoryStore()
    data = random.Random(cid_version).randbytes(64 * 100 + 17)
    entry = import_bytes(data, store, ImportOptions(cid_version=cid_version, chunker="size-64", max_links=4))
    f = UnixFSFile(store, entry.cid)
    assert f.size == len(data)
    assert decode_node(store.get(entry.cid)).links  # really a DAG
    _random_ranges(f, data, random.Random(1))
    assert b"".join(f.iter_chunks()) == data
    assert b"".join(f.iter_chunks(100, 1000)) == data[100:1100]
    assert b"".join(f.iter_chunks(len(data) - 5)) == data[-5:]
    assert list(f.iter_chunks(len(data))) == []
    assert f.read_range(len(data) + 10, 5) == b""


def test_single_block_roots() -> None:
    store = MemoryStore()
    raw = import_bytes(b"hello world", store, ImportOptions(cid_version=1))
    assert str(raw.cid) == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    leaf = import_bytes(b"hello world", store)
    assert str(leaf.cid) == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    for cid in (raw.cid, leaf.cid):
        f = UnixFSFile(store, cid)
        assert (f.size, f.read_range(6, 100), f.read_range(0, 5)) == (11, b"world", b"hello")
    empty = import_bytes(b"", store)
    assert str(empty.cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    f = UnixFSFile(store, empty.cid)
    assert (f.size, f.read(), list(f.iter_chunks()), f.open().read()) == (0, b"", [], b"")


def test_inner_node_data_comes_before_children() -> None:
    store = MemoryStore()
    a = raw_leaf(store, b"AAAA")
    b = pb_leaf(store, b"bb")
    c = raw_leaf(store, b"CCCCCC")
    mid = file_node(store, [b, c], data=b"mid")
    root, size = file_node(store, [a, mid], data=b"HEAD")
    expected = b"HEAD" + b"AAAA" + b"mid" + b"bb" + b"CCCCCC"
    f = UnixFSFile(store, root)
    assert size == f.size == len(expected)
    assert f.read() == expected
    for lo in range(len(expected) + 1):
        for hi in range(lo, len(expected) + 2):
            assert f.read_range(lo, hi - lo) == expected[lo:hi], (lo, hi)
    assert b"".join(f.iter_chunks(3, 9)) == expected[3:12]


def _three_level_file() -> tuple[CountingStore, CID, bytes]:
    base = MemoryStore()
    data = random.Random(7).randbytes(64 * 27)  # 27 leaves, 3 links per node: root -> 3 -> 9 -> 27
    entry = import_bytes(data, base, ImportOptions(cid_version=1, chunker="size-64", max_links=3))
    return CountingStore(base), entry.cid, data


def test_read_range_fetches_only_covering_blocks() -> None:
    store, root, data = _three_level_file()
    f = UnixFSFile(store, root)
    assert len(store.fetched) == 1  # the root, to learn the size
    assert f.read_range(64 * 4 + 10, 20) == data[64 * 4 + 10:64 * 4 + 30]
    assert len(store.fetched) == 1 + 3  # level-1 node, level-2 node, one leaf
    # a range across leaves 8|9, which sit under different level-1 nodes
    store.fetched.clear()
    assert f.read_range(64 * 9 - 5, 10) == data[64 * 9 - 5:64 * 9 + 5]
    assert len(store.fetched) == 5  # L2 of leaf 8 (L1 cached), leaf 8, L1b, L2', leaf 9
    # the same reads again: inner nodes and leaves come from the small caches
    store.fetched.clear()
    f.read_range(64 * 9 - 5, 10)
    f.read_range(64 * 4 + 10, 20)
    assert store.fetched == []


def test_many_small_reads_in_one_leaf_fetch_it_once() -> None:
    store, root, data = _three_level_file()
    f = UnixFSFile(store, root)
    store.fetched.clear()
    for i in range(64):
        assert f.read_range(64 * 13 + i, 1) == data[64 * 13 + i:64 * 13 + i + 1]
    assert len(store.fetched) == 3


def test_streaming_fetches_each_block_once() -> None:
    store, root, data = _three_level_file()
    f = UnixFSFile(store, root, prefetch=4)
    store.fetched.clear()
    assert b"".join(f.iter_chunks()) == data
    assert len(store.fetched) == 3 + 9 + 27 == len(set(store.fetched))
    store.fetched.clear()
    assert b"".join(f.iter_chunks(64 * 26 + 1)) == data[64 * 26 + 1:]
    assert len(store.fetched) == 1  # inner nodes cached; only the last leaf


def test_open_is_a_seekable_file() -> None:
    store = MemoryStore()
    data = os.urandom(5000)
    root = import_bytes(data, store, ImportOptions(chunker="size-100", max_links=5)).cid
    fh = UnixFSFile(store, root).open(buffer_size=128)
    assert isinstance(fh, io.BufferedReader)
    assert (fh.readable(), fh.seekable(), fh.tell()) == (True, True, 0)
    assert fh.read(10) == data[:10]
    assert fh.seek(-7, io.SEEK_END) == 4993
    assert fh.read(100) == data[-7:]
    assert fh.read(1) == b""
    fh.seek(1234)
    assert fh.read() == data[1234:]
    fh.seek(10_000)
    assert (fh.read(5), fh.tell()) == (b"", 10_000)
    fh.seek(42)
    buf = bytearray(300)
    assert fh.readinto(buf) == 300 and bytes(buf) == data[42:342]
    with pytest.raises(ValueError):
        fh.seek(-1)
    fh.close()
    with pytest.raises(ValueError):
        fh.read(1)


# -- strictness ------------------------------------------------------------------------


def test_missing_leaf_raises_and_never_returns_partial_data() -> None:
    store = MemoryStore()
    data = os.urandom(64 * 10)
    root = import_bytes(data, store, ImportOptions(cid_version=1, chunker="size-64")).cid
    leaves = decode_node(store.get(root)).links
    del store.blocks[leaves[5].cid.multihash]
    f = UnixFSFile(store, root)
    assert f.read_range(0, 64 * 5) == data[:64 * 5]  # the part that is present
    with pytest.raises(BlockNotFoundError) as e:
        f.read_range(64 * 4, 200)
    assert e.value.cid == leaves[5].cid
    with pytest.raises(BlockNotFoundError):
        b"".join(UnixFSFile(store, root).iter_chunks())
    with pytest.raises(BlockNotFoundError):
        f.open().read()


def test_tampered_leaf_is_an_integrity_error() -> None:
    store = MemoryStore()
    data = os.urandom(64 * 4)
    root = import_bytes(data, store, ImportOptions(cid_version=1, chunker="size-64")).cid
    leaf = decode_node(store.get(root)).links[2].cid
    store.blocks[leaf.multihash] = b"x" * 64
    with pytest.raises(IntegrityError) as e:
        UnixFSFile(store, root).read_range(64 * 2, 1)
    assert e.value.cid == leaf


def test_directory_root_is_not_a_file() -> None:
    store = MemoryStore()
    d = directory(store, {"a": raw_leaf(store, b"x")[0]})
    with pytest.raises(NotAFileError, match=str(d)):
        UnixFSFile(store, d)
    with pytest.raises(NotAFileError, match="Symlink"):
        UnixFSFile(store, symlink(store, "/etc/passwd"))


@pytest.mark.parametrize(
    "broken",
    ["blocksizes_count", "filesize", "raw_child_size", "pb_child_size", "dir_inside", "no_data"],
)
def test_inconsistent_dags_are_format_errors(broken: str) -> None:
    store = MemoryStore()
    a = raw_leaf(store, b"A" * 10)
    b = raw_leaf(store, b"B" * 10)
    if broken == "blocksizes_count":
        root, _ = file_node(store, [a, b], blocksizes=[10])
    elif broken == "filesize":
        root, _ = file_node(store, [a, b], filesize=21)
    elif broken == "raw_child_size":
        root, _ = file_node(store, [a, b], blocksizes=[10, 12])
    elif broken == "pb_child_size":
        inner, _ = file_node(store, [a, b], filesize=None)
        root, _ = file_node(store, [(inner, 19)])
    elif broken == "dir_inside":
        d = directory(store, {"x": a[0]})
        root, _ = file_node(store, [a, (d, 10)])
    else:
        bare = put_pb(store, PBNode([PBLink(a[0], "", 10)], None))
        root, _ = file_node(store, [(bare, 10)])
    with pytest.raises(UnixFSFormatError) as e:
        UnixFSFile(store, root).read()
    culprit = {"pb_child_size": None, "dir_inside": None, "no_data": None}.get(broken, root)
    if culprit is not None:
        assert str(culprit) in str(e.value)


def test_offsets_are_validated() -> None:
    store = MemoryStore()
    f = UnixFSFile(store, raw_leaf(store, b"abc")[0])
    with pytest.raises(ValueError):
        f.read_range(-1, 2)
    with pytest.raises(ValueError):
        f.read_range(0, -2)


# -- directories -----------------------------------------------------------------------


TREE = {
    "a.txt": b"hello",
    "sub/b.bin": bytes(range(256)) * 3,
    "sub/deeper/c": b"c" * 10,
    "empty": None,
}


def test_ls_plain_directory_with_types() -> None:
    store = MemoryStore()
    root = import_tree(TREE, store, ImportOptions())
    link = symlink(store, "a.txt")
    node = decode_node(store.get(root))
    node.links.append(PBLink(link, "zlink", 9))
    root2 = put_pb(store, node)
    entries = ls(store, root2)
    assert [(e.name, e.type) for e in entries] == [
        ("a.txt", "file"), ("empty", "dir"), ("sub", "dir"), ("zlink", "symlink")
    ]
    assert entries[0] == DirEntry("a.txt", resolve_path(store, root, "a.txt"), node.links[0].tsize, "file")
    lazy = ls(store, root2, resolve_types=False)
    assert [e.type for e in lazy] == ["unknown"] * 4
    with pytest.raises(NotADirectoryError):
        ls(store, resolve_path(store, root, "a.txt"))


def test_resolve_path_and_errors() -> None:
    store = MemoryStore()
    root = import_tree(TREE, store, ImportOptions(cid_version=1))
    c = resolve_path(store, root, "sub/deeper/c")
    assert UnixFSFile(store, c).read() == b"c" * 10
    assert resolve_path(store, root, "/sub//deeper/c/") == c
    assert resolve_path(store, root, "") == root
    assert resolve_path(store, root, ["sub", "deeper", "c"]) == c
    with pytest.raises(PathNotFoundError) as e:
        resolve_path(store, root, "sub/nope/c")
    assert e.value.missing == "nope"
    with pytest.raises(NotADirectoryError):
        resolve_path(store, root, "a.txt/x")


def test_hamt_directory_ls_and_resolve_fetch_only_the_bucket_path() -> None:
    base = MemoryStore()
    names = {f"file-{i:04d}.txt": f"content {i}".encode() for i in range(600)}
    plain_root = import_tree(names, base, ImportOptions(hamt_threshold=0))
    hamt_root = import_tree(names, base, ImportOptions(hamt_threshold=1000))
    root_node = decode_node(base.get(hamt_root))
    assert UnixFSData.decode(root_node.data).type == DataType.HAMTShard
    assert any(len(link.name) == 2 for link in root_node.links)  # has child shards
    plain = {e.name: (e.cid, e.type) for e in ls(base, plain_root)}
    hamt = ls(base, hamt_root)
    assert len(hamt) == 600
    assert {e.name: (e.cid, e.type) for e in hamt} == plain
    st = stat(base, hamt_root)
    assert (st.type, st.hamt, st.size) == ("dir", True, 0)

    store = CountingStore(base)
    for name in ("file-0000.txt", "file-0317.txt", "file-0599.txt"):
        store.fetched.clear()
        cid = resolve_path(store, hamt_root, name)
        assert cid == plain[name][0]
        assert len(store.fetched) <= 3  # root shard + child shard(s) on the hash path
    with pytest.raises(PathNotFoundError):
        resolve_path(store, hamt_root, "file-9999.txt")


def test_stat() -> None:
    store = MemoryStore()
    data = os.urandom(1000)
    entry = import_bytes(data, store, ImportOptions(chunker="size-100"))
    st = stat(store, entry.cid)
    assert (st.type, st.size, st.blocks, st.cumulative_size) == ("file", 1000, 10, entry.size)
    raw = import_bytes(b"abc", store, ImportOptions(cid_version=1)).cid
    assert stat(store, raw).size == 3 and stat(store, raw).type == "file"
    root = import_tree(TREE, store, ImportOptions())
    st = stat(store, root)
    assert (st.type, st.blocks, st.size, st.hamt) == ("dir", 3, 0, False)
    assert stat(store, symlink(store, "abc")).size == 3
    assert CID.decode(str(root)).codec == DAG_PB
