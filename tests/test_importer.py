"""The UnixFS importer on its own: published vectors, exact tree shapes, byte-level
traps, directories, HAMT thresholds and bounded memory. (Kubo and the JS importer
are compared in test_oracle_kubo.py / test_oracle_js.py.)"""

from __future__ import annotations

import io
import os
import random
import tracemalloc

import pytest

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.dag import walk_dfs
from torch_ipfs.dagpb import DataType, UnixFSData, decode_node
from torch_ipfs.sources.base import MAX_BLOCK_SIZE, MemoryStore, NullStore
from torch_ipfs.unixfs import hamt
from torch_ipfs.unixfs.chunker import FixedSizeChunker, get_chunker
from torch_ipfs.unixfs.importer import (
    ImportOptions,
    UnsupportedFileError,
    import_bytes,
    import_file,
    import_path,
    import_tree,
)

V1 = ImportOptions(cid_version=1)
SIZE4 = ImportOptions(chunker="size-4")


# -- published vectors (ipfs-facts.md) -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "options", "expected"),
    [
        (b"hello world", ImportOptions(), "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"),
        (b"hello world", V1, "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
        (bytes(1_000_000), ImportOptions(), "QmXXNNbwe4zzpdMg62ZXvnX1oU7MwSrQ3vAEtuwFKCm1oD"),
        (b"aoeuidhtns" * 200, SIZE4, "QmRo11d4QJrST47aaiGVJYwPhoNA4ihRpJ5WaxBWjWDwbX"),
        (b"", ImportOptions(), "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
        (b"", V1, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    ],
)
def test_published_vectors(data, options, expected):
    store = MemoryStore()
    entry = import_bytes(data, store, options)
    assert str(entry.cid) == expected
    assert entry.filesize == len(data)
    # every block of the DAG landed in the store, verified, and none is over the cap
    blocks = list(walk_dfs(store, entry.cid, dedupe=False))
    assert all(len(b) <= MAX_BLOCK_SIZE for _, b in blocks)
    assert entry.size == sum(len(b) for _, b in blocks)  # Tsize = the whole DAG, duplicates counted


def test_empty_file_and_empty_dir_bytes():
    store = MemoryStore()
    entry = import_bytes(b"", store)
    assert store.get(entry.cid) == bytes.fromhex("0a0408021800")
    assert entry.size == 6
    root = import_tree({"e": None}, store)
    empty = decode_node(store.get(root)).links[0]
    assert str(empty.cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    assert store.get(empty.cid) == bytes.fromhex("0a020801")
    assert empty.tsize == 4


# -- layout ---------------------------------------------------------------------------------


def _shape(store, cid):
    """Nested lists of leaf sizes, checking every link's invariants on the way."""
    block = store.get(cid)
    if cid.codec == RAW:
        return len(block)
    node = decode_node(block)
    fs = UnixFSData.decode(node.data)
    assert fs.type == DataType.File
    if not node.links:
        assert fs.filesize == len(fs.data or b"")
        return fs.filesize
    assert fs.data is None
    assert len(fs.blocksizes) == len(node.links)
    children = []
    tsizes = 0
    for link, bs in zip(node.links, fs.blocksizes):
        assert link.name == ""  # present but empty, never absent
        child = _shape(store, link.cid)
        assert bs == _total(child)
        assert link.tsize == _tsize(store, link.cid)
        tsizes += link.tsize
        children.append(child)
    assert fs.filesize == sum(fs.blocksizes)
    return children


def _total(shape):
    return shape if isinstance(shape, int) else sum(_total(s) for s in shape)


def _tsize(store, cid):
    block = store.get(cid)
    if cid.codec == RAW:
        return len(block)
    return len(block) + sum(link.tsize for link in decode_node(block).links)


@pytest.mark.parametrize(
    ("nbytes", "expected"),
    [
        (1, 1),
        (4, 4),
        (5, [4, 1]),
        (12, [4, 4, 4]),
        (13, [[4, 4, 4], [1]]),
        (36, [[4, 4, 4], [4, 4, 4], [4, 4, 4]]),
        (37, [[[4, 4, 4], [4, 4, 4], [4, 4, 4]], [[1]]]),
        (46, [[[4, 4, 4], [4, 4, 4], [4, 4, 4]], [[4, 4, 2]]]),
        (50, [[[4, 4, 4], [4, 4, 4], [4, 4, 4]], [[4, 4, 4], [2]]]),
        (108, [[[4, 4, 4], [4, 4, 4], [4, 4, 4]]] * 3),
        (109, [[[[4, 4, 4], [4, 4, 4], [4, 4, 4]]] * 3, [[[1]]]]),
    ],
)
@pytest.mark.parametrize("cid_version", [0, 1])
def test_balanced_shape(nbytes, expected, cid_version):
    options = ImportOptions(cid_version=cid_version, chunker="size-4", max_links=3)
    store = MemoryStore()
    data = bytes(random.Random(nbytes).getrandbits(8) for _ in range(nbytes))
    entry = import_bytes(data, store, options)
    assert _shape(store, entry.cid) == expected
    assert entry.size == _tsize(store, entry.cid)
    assert entry.filesize == nbytes
    if options.cid_version == 0 and isinstance(expected, list):
        assert entry.cid.version == 0


def test_raw_leaves_with_cidv0_root():
    store = MemoryStore()
    entry = import_bytes(b"abcdefgh", store, ImportOptions(chunker="size-4", raw_leaves=True))
    assert entry.cid.version == 0
    node = decode_node(store.get(entry.cid))
    assert [(link.cid.version, link.cid.codec) for link in node.links] == [(1, RAW), (1, RAW)]
    # a single chunk with raw leaves is one raw block, even for CIDv0 options
    single = import_bytes(b"abcd", store, ImportOptions(chunker="size-4", raw_leaves=True))
    assert (single.cid.version, single.cid.codec) == (1, RAW)
    assert CID.decode(str(single.cid)) == CID.compute(b"abcd")


def test_v1_without_raw_leaves():
    store = MemoryStore()
    entry = import_bytes(b"abcdefgh", store, ImportOptions(cid_version=1, raw_leaves=False, chunker="size-4"))
    assert (entry.cid.version, entry.cid.codec) == (1, DAG_PB)
    links = decode_node(store.get(entry.cid)).links
    assert [(link.cid.version, link.cid.codec) for link in links] == [(1, DAG_PB), (1, DAG_PB)]
    assert store.get(links[0].cid) == bytes.fromhex("0a0a08021204616263641804")


def test_chunk_links_carry_empty_name_bytes():
    store = MemoryStore()
    entry = import_bytes(b"abcdefgh", store, ImportOptions(chunker="size-4"))
    block = store.get(entry.cid)
    leaf = import_bytes(b"abcd", NullStore()).cid
    # PBLink{Hash, Name: "" (12 00), Tsize: 12} -- leaving Name out would change every CID
    assert bytes.fromhex("0a22") + leaf.to_bytes() + bytes.fromhex("1200180c") in block
    assert block.endswith(bytes.fromhex("0a080802180820042004"))


def test_short_reads_do_not_move_chunk_boundaries():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.buf = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 1000)
            chunk = self.buf.read(n)
            b[: len(chunk)] = chunk
            return len(chunk)

    data = random.Random(7).randbytes(700_000)
    expected = import_bytes(data, NullStore()).cid
    assert import_file(Trickle(data), NullStore()).cid == expected


def test_chunker_registry():
    assert get_chunker().size == 262144
    assert get_chunker("size-4").size == 4
    assert list(FixedSizeChunker(3).chunks(io.BytesIO(b"abcdefg"))) == [b"abc", b"def", b"g"]
    assert list(FixedSizeChunker(3).chunks(io.BytesIO(b""))) == []
    with pytest.raises(ValueError, match="valid: 'size-N'"):
        get_chunker("rabin-1-2-3")
    with pytest.raises(ValueError, match="positive"):
        get_chunker("size-0")
    with pytest.raises(ValueError, match="maximum"):
        get_chunker(f"size-{1024 * 1024 + 1}")
    with pytest.raises(ValueError):
        ImportOptions(chunker="size-x")
    with pytest.raises(ValueError, match="CIDv0"):
        import_bytes(b"x", NullStore(), ImportOptions(hash="sha2-512"))
    sha512 = ImportOptions(cid_version=1, hash="sha2-512")
    assert import_bytes(b"x", NullStore(), sha512).cid.hash_code == 0x13


class _SeededStream(io.RawIOBase):
    """``total`` pseudo-random bytes generated on the fly (never all in memory)."""

    def __init__(self, total: int, seed: int = 0) -> None:
        self.left = total
        self.rng = random.Random(seed)

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = self.rng.randbytes(n)
        self.left -= n
        return n


def test_import_holds_bounded_memory():
    """64 MiB through the importer: the peak of Python allocations stays within a few
    chunks (one being read, one looked ahead, one leaf block), not the file size."""
    chunk = 262144
    tracemalloc.start()
    try:
        entry = import_file(io.BufferedReader(_SeededStream(64 * 1024 * 1024), chunk), NullStore())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry.filesize == 64 * 1024 * 1024
    assert peak < 8 * chunk, f"peak {peak} bytes"  # measured ~5.4 chunks; the file is 256


# -- directories ----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "top"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha")
    (root / "B.txt").write_bytes(b"bravo")
    (root / "sub" / "deeper" / "c").write_bytes(b"x" * 1000)
    (root / "sub" / "ünï😀").write_bytes(b"unicode")
    (root / ".hidden").write_bytes(b"secret")
    os.symlink("a.txt", root / "link")
    return root


def test_import_path_order_and_names(tree):
    entries = list(import_path(tree, MemoryStore()))
    assert [(e.name, e.is_dir) for e in entries] == [
        ("top/B.txt", False),
        ("top/a.txt", False),
        ("top/link", False),
        ("top/sub/deeper/c", False),
        ("top/sub/ünï😀", False),
        ("top/empty", True),
        ("top/sub/deeper", True),
        ("top/sub", True),
        ("top", True),
    ]
    assert str(entries[5].cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    wrapped = list(import_path(tree, MemoryStore(), wrap=True))
    assert wrapped[:-1] == entries
    assert wrapped[-1].name == "" and wrapped[-1].is_dir


def test_directory_node_bytes_and_tsizes(tree):
    store = MemoryStore()
    root = list(import_path(tree, store))[-1]
    node = decode_node(store.get(root.cid))
    assert node.data == b"\x08\x01"
    assert [link.name for link in node.links] == ["B.txt", "a.txt", "empty", "link", "sub"]  # bytewise
    for link in node.links:
        assert link.tsize == _tsize(store, link.cid)
    assert root.size == _tsize(store, root.cid)
    link = next(link for link in node.links if link.name == "link")
    assert UnixFSData.decode(decode_node(store.get(link.cid)).data) == UnixFSData(DataType.Symlink, b"a.txt")


def test_hidden_files(tree):
    default = list(import_path(tree, NullStore()))[-1].cid
    hidden = list(import_path(tree, NullStore(), ImportOptions(hidden=True)))[-1].cid
    assert default != hidden
    (tree / ".hidden").unlink()
    assert list(import_path(tree, NullStore(), ImportOptions(hidden=True)))[-1].cid == default


def test_import_tree_matches_import_path(tree):
    (tree / "link").unlink()
    for options in (ImportOptions(hidden=True), ImportOptions(cid_version=1, hidden=True)):
        entries = {
            "a.txt": b"alpha",
            "B.txt": io.BytesIO(b"bravo"),  # a stream is read, chunk by chunk
            "sub/deeper/c": b"x" * 1000,
            "sub/ünï😀": b"unicode",
            ".hidden": b"secret",
            "empty": None,
        }
        on_disk = list(import_path(tree, NullStore(), options))[-1].cid
        assert import_tree(entries, NullStore(), options) == on_disk
    for bad in ({"../x": b""}, {"/abs": b""}, {"a": b"", "a/b": b""}):
        with pytest.raises(UnsupportedFileError):
            import_tree(bad, NullStore())


def test_special_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsupportedFileError, match="fifo"):
        list(import_path(tmp_path, NullStore()))


def _estimate_dir(n_entries: int, name_len: int) -> dict[str, bytes]:
    return {f"{i:05d}".ljust(name_len, "n"): str(i).encode() for i in range(n_entries)}


@pytest.mark.parametrize("inclusive", [False, True])
def test_hamt_threshold_comparison(inclusive):
    # 40 entries x (16-byte name + 34-byte CIDv0) = an estimate of exactly 2000
    entries = _estimate_dir(40, 16)
    store = MemoryStore()

    def root_type(threshold):
        opts = ImportOptions(hamt_threshold=threshold, hamt_threshold_inclusive=inclusive)
        cid = import_tree(entries, store, opts)
        return UnixFSData.decode(decode_node(store.get(cid)).data).type

    assert root_type(1999) == DataType.HAMTShard
    assert root_type(2000) == (DataType.HAMTShard if inclusive else DataType.Directory)
    assert root_type(2001) == DataType.Directory
    assert root_type(0) == DataType.Directory  # 0 disables sharding


def test_hamt_structure():
    entries = _estimate_dir(600, 20)
    store = MemoryStore()
    cid = import_tree(entries, store, ImportOptions(hamt_threshold=1000))
    seen: dict[str, CID] = {}

    def walk(shard_cid, depth, prefix_hashes):
        node = decode_node(store.get(shard_cid))
        fs = UnixFSData.decode(node.data)
        assert (fs.type, fs.hash_type, fs.fanout) == (DataType.HAMTShard, 0x22, 256)
        buckets = [int(link.name[:2], 16) for link in node.links]
        assert buckets == sorted(buckets)
        assert fs.data == hamt.bitfield_bytes(buckets)
        for link in node.links:
            if len(link.name) == 2:
                walk(link.cid, depth + 1, prefix_hashes)
            else:
                name = link.name[2:]
                assert hamt.bucket_at(hamt.hash_name(name), depth) == int(link.name[:2], 16)
                seen[name] = link.cid

    walk(cid, 0, None)
    assert sorted(seen) == sorted(entries)
    assert hamt.bitfield_bytes([0]) == b"\x01"
    assert hamt.bitfield_bytes([9, 255]) == b"\x80" + bytes(29) + b"\x02\x00"
    assert hamt.bitfield_bytes([]) == b""
