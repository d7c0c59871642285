"""The embedded on-disk block store: layout, verification, atomic writes, pins, gc, and
several real processes writing at once (plus the small config module it reads)."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path

import pytest

from torch_ipfs.cid import CID, DAG_PB, RAW
from torch_ipfs.config import DEFAULT_CACHE_BYTES, Settings, default_home, parse_size
from torch_ipfs.dag import walk_dfs
from torch_ipfs.errors import BlockNotFoundError, BlockTooLargeError, IntegrityError, StoreError
from torch_ipfs.sources import MAX_BLOCK_SIZE, LocalStore, MemoryStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes

MP = multiprocessing.get_context("fork")  # what DataLoader workers use on Linux

HELLO = b"hello world"
HELLO_RAW = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
# base32 (upper, unpadded) of the sha2-256 multihash of b"hello world", as Kubo's flatfs names it
HELLO_KEY = "CIQLSTJHXGJU2PQIUUXFFV62PWV7VREE57RXUU4A52IIR55M4LX432I"
# the UnixFS leaf block that QmF412... is the hash of: {Type: File, Data: "hello world", filesize: 11}
HELLO_PB_BLOCK = bytes.fromhex("0a110802120b68656c6c6f20776f726c64180b")

SMALL = ImportOptions(chunker="size-256", max_links=4)  # multi-level DAGs from a few KiB


def raw_block(data: bytes) -> tuple[CID, bytes]:
    return CID.compute(data, RAW), data


def dag_multihashes(store, root: CID) -> set[bytes]:
    return {cid.multihash for cid, _ in walk_dfs(store, root)}


def on_disk(store: LocalStore) -> set[bytes]:
    return set(store.iter_multihashes())


def tmp_files(store: LocalStore) -> list[str]:
    return os.listdir(store.root / "tmp")


# -- layout and round trips -------------------------------------------------------------------


def test_put_get_round_trip_in_flatfs_layout(tmp_path):
    store = LocalStore(tmp_path / "repo")
    cid = CID.decode(HELLO_RAW)
    store.put(cid, HELLO)
    assert store.get(cid) == HELLO
    assert store.has(cid)
    path = tmp_path / "repo" / "blocks" / "32" / f"{HELLO_KEY}.data"
    assert path.read_bytes() == HELLO
    assert (tmp_path / "repo" / "blocks" / "SHARDING").read_text() == "/repo/flatfs/shard/v1/next-to-last/2\n"
    assert store.stats().blocks == 1 and store.stats().bytes == 11
    assert list(store.iter_multihashes()) == [cid.multihash]
    assert tmp_files(store) == []


def test_default_root_is_torch_ipfs_home(_isolated_home):
    store = LocalStore()
    assert store.root == Path(_isolated_home)
    store.put(*raw_block(b"x"))
    assert store.stats().blocks == 1
    assert (Path(_isolated_home) / "blocks").is_dir()


def test_v0_and_v1_share_one_block(tmp_path):
    store = LocalStore(tmp_path)
    v0 = CID.decode(HELLO_V0)
    store.put(v0, HELLO_PB_BLOCK)
    v1 = v0.to_v1()
    assert str(v1).startswith("bafybei")
    assert store.has(v1)
    assert store.get(v1) == HELLO_PB_BLOCK
    store.put(v1, HELLO_PB_BLOCK)  # idempotent: same multihash, same file
    assert store.stats().blocks == 1


def test_put_many_and_delete(tmp_path, rng):
    store = LocalStore(tmp_path)
    blocks = [raw_block(rng.randbytes(rng.randrange(1, 3000))) for _ in range(50)]
    store.put_many(blocks + blocks[:10])
    assert store.stats().blocks == 50
    assert store.stats().bytes == sum(len(b) for _, b in blocks)
    assert on_disk(store) == {c.multihash for c, _ in blocks}
    assert store.delete(blocks[0][0]) is True
    assert store.delete(blocks[0][0]) is False
    assert not store.has(blocks[0][0])
    with pytest.raises(BlockNotFoundError) as info:
        store.get(blocks[0][0])
    assert str(blocks[0][0]) in str(info.value) and "local store" in str(info.value)


def test_identity_cids_are_answered_not_stored(tmp_path):
    store = LocalStore(tmp_path)
    cid = CID.identity(b"tiny")
    store.put(cid, b"tiny")
    assert store.get(cid) == b"tiny"
    assert store.stats().blocks == 0


# -- verification -----------------------------------------------------------------------------


def test_tampered_put_is_rejected_and_nothing_is_written(tmp_path):
    store = LocalStore(tmp_path)
    cid = CID.decode(HELLO_RAW)
    with pytest.raises(IntegrityError):
        store.put(cid, b"hello world!")
    with pytest.raises(IntegrityError):
        store.put_many([raw_block(b"fine"), (cid, b"HELLO WORLD")])
    assert not store.has(cid)
    assert on_disk(store) == {CID.compute(b"fine", RAW).multihash}  # blocks before the bad one stay
    assert tmp_files(store) == []


def test_oversized_block_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    big = b"\0" * (MAX_BLOCK_SIZE + 1)
    with pytest.raises(BlockTooLargeError):
        store.put(CID.compute(big, RAW), big)
    assert store.stats().blocks == 0


def test_an_oversized_file_on_disk_is_refused(tmp_path):
    store = LocalStore(tmp_path)
    cid = CID.decode(HELLO_RAW)
    store.put(cid, HELLO)
    Path(store._block_path(cid.multihash)).write_bytes(b"\0" * (MAX_BLOCK_SIZE + 5))
    with pytest.raises(BlockTooLargeError):
        store.get(cid)


def test_damaged_file_on_disk_is_detected_and_repaired(tmp_path):
    store = LocalStore(tmp_path)
    cid = CID.decode(HELLO_RAW)
    store.put(cid, HELLO)
    path = tmp_path / "blocks" / "32" / f"{HELLO_KEY}.data"
    path.write_bytes(b"hello_world")  # same length, one byte flipped
    with pytest.raises(IntegrityError):
        store.get(cid)
    assert store.verify() == [cid.multihash]
    assert store.verify(remove=True) == [cid.multihash]
    assert not store.has(cid)
    store.put(cid, HELLO)
    assert store.get(cid) == HELLO
    path.write_bytes(b"hello")  # truncated (e.g. a power loss without fsync)
    with pytest.raises(IntegrityError):
        store.get(cid)
    store.put(cid, HELLO)  # a put of the right bytes replaces a file of the wrong length
    assert store.get(cid) == HELLO
    assert store.verify() == []


def test_fsync_mode_writes_the_same(tmp_path, rng):
    store = LocalStore(tmp_path, fsync=True)
    blocks = [raw_block(rng.randbytes(100)) for _ in range(5)]
    store.put_many(blocks)
    store.put(*raw_block(b"one more"))
    assert all(store.get(c) == d for c, d in blocks)


# -- temp files and crashes ------------------------------------------------------------------


def test_leftover_temp_files_are_invisible_and_cleaned(tmp_path):
    store = LocalStore(tmp_path)
    junk = tmp_path / "tmp" / "12345.deadbeef.tmp"
    junk.write_bytes(b"half a blo")
    assert store.stats().blocks == 0 and list(store.iter_multihashes()) == []
    LocalStore(tmp_path)  # startup cleans when no writer is active
    assert not junk.exists()
    junk.write_bytes(b"half a blo")
    with store.writer():
        LocalStore(tmp_path)  # a writer is active: its temp files must survive
        assert junk.exists()
    store.gc()
    assert not junk.exists()


def _write_forever(root: str, size: int, ready) -> None:
    """Rewrite 16 blocks over and over (delete + put), so disk use stays bounded."""
    store = LocalStore(root)
    blocks = [raw_block(random.Random(i).randbytes(size)) for i in range(16)]
    ready.set()
    for i in itertools.count():
        cid, data = blocks[i % len(blocks)]
        store.delete(cid)
        store.put(cid, data)


def _read_all_verified(store: LocalStore) -> int:
    n = 0
    for mh in store.iter_multihashes():
        try:
            data = store.get(CID(1, RAW, mh))  # raises IntegrityError on a partial file
        except BlockNotFoundError:
            continue
        assert len(data) > 0
        n += 1
    return n


def test_readers_never_see_partial_blocks_and_kill_9_leaves_none(tmp_path):
    store = LocalStore(tmp_path)
    ready = MP.Event()
    writer = MP.Process(target=_write_forever, args=(str(tmp_path), 256 * 1024, ready))
    writer.start()
    try:
        assert ready.wait(10)
        seen = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            seen = max(seen, _read_all_verified(store))
        # kill it while it is writing: wait until a temp file exists, then SIGKILL
        caught = False
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not caught:
            caught = bool(tmp_files(store))
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.join(10)
    assert writer.exitcode == -signal.SIGKILL
    assert caught, "never saw the writer mid-write (a temp file in tmp/)"
    assert seen > 0
    assert _read_all_verified(store) == store.stats().blocks
    assert store.verify() == []
    LocalStore(tmp_path)  # the dead writer's lock is gone: startup removes its temp file
    assert tmp_files(store) == []


# -- pins and gc ------------------------------------------------------------------------------


def _three_dags(store, rng, options):
    a = rng.randbytes(5000)
    b = a[:2048] + rng.randbytes(3000)  # shares its first 8 chunks with a
    c = rng.randbytes(3000)
    return [import_bytes(x, store, options).cid for x in (a, b, c)]


@pytest.mark.parametrize("cid_version", [0, 1])  # dag-pb leaves / raw leaves
def test_pin_unpin_gc_keeps_exactly_the_pinned_dags(tmp_path, rng, cid_version):
    store = LocalStore(tmp_path)
    options = ImportOptions(chunker="size-256", max_links=4, cid_version=cid_version)
    a, b, c = _three_dags(store, rng, options)
    mirror = MemoryStore()
    for cid in (a, b, c):
        for blk_cid, blk in walk_dfs(store, cid):
            mirror.put(blk_cid, blk)
    dag_a, dag_b, dag_c = (dag_multihashes(mirror, x) for x in (a, b, c))
    assert len(dag_a) > 20 and dag_a & dag_b and not dag_a & dag_c  # multi-level, overlapping
    loose = raw_block(b"not pinned by anyone")
    store.put(*loose)

    store.pin(a)
    store.pin(c)
    assert store.pins() == sorted([a, c], key=str)
    assert store.is_pinned(a) and not store.is_pinned(b)
    result = store.gc()
    assert on_disk(store) == dag_a | dag_c
    assert result.removed_blocks == len(dag_b - dag_a) + 1
    assert result.freed_bytes == sum(len(mirror.get(CID(1, RAW, mh))) for mh in dag_b - dag_a) + len(loose[1])
    assert store.gc().removed_blocks == 0

    store.unpin(a)
    assert store.pins() == [c]
    store.gc()
    assert on_disk(store) == dag_c
    with pytest.raises(StoreError):
        store.unpin(a)
    store.unpin(c)
    store.gc()
    assert on_disk(store) == set()


def test_direct_pin_keeps_only_the_root(tmp_path, rng):
    store = LocalStore(tmp_path)
    root = import_bytes(rng.randbytes(3000), store, SMALL).cid
    store.pin(root, recursive=False)
    store.gc()
    assert on_disk(store) == {root.multihash}
    assert store.pins() == [root]


def test_v1_pin_protects_blocks_put_under_v0(tmp_path, rng):
    store = LocalStore(tmp_path)
    root = import_bytes(rng.randbytes(2000), store, SMALL).cid  # CIDv0 DAG
    expected = dag_multihashes(store, root)
    store.pin(root.to_v1())
    store.gc()
    assert on_disk(store) == expected


def test_pin_checks_the_dag_is_complete(tmp_path, rng):
    store = LocalStore(tmp_path)
    root = import_bytes(rng.randbytes(3000), store, SMALL).cid
    cids = [cid for cid, _ in walk_dfs(store, root)]
    missing = cids[len(cids) // 2]
    store.delete(missing)
    with pytest.raises(BlockNotFoundError) as info:
        store.pin(root)
    assert info.value.cid == missing
    assert str(missing) in str(info.value) and "local store" in str(info.value)
    assert store.pins() == []
    store.pin(root, check=False)  # a partial DAG can be pinned on purpose
    store.put(*raw_block(b"garbage"))
    result = store.gc()  # keeps every present block of the pinned DAG
    assert result.removed_blocks == 1
    assert on_disk(store) == {c.multihash for c in cids} - {missing.multihash}


def test_gc_refuses_to_sweep_when_a_pinned_block_is_damaged(tmp_path, rng):
    store = LocalStore(tmp_path)
    root = import_bytes(rng.randbytes(3000), store, SMALL).cid
    store.pin(root)
    store.put(*raw_block(b"garbage"))
    key = store._block_path(root.multihash)
    Path(key).write_bytes(b"\0" * os.path.getsize(key))
    before = on_disk(store)
    with pytest.raises(StoreError, match="nothing removed"):
        store.gc()
    assert on_disk(store) == before


def test_gc_inside_a_writer_session_is_an_error(tmp_path):
    store = LocalStore(tmp_path)
    with store.writer(), pytest.raises(StoreError):
        store.gc()


def _import_and_pin_slowly(root: str, data: bytes, written, gc_waiting, result) -> None:
    store = LocalStore(root)
    with store.writer():
        cid = import_bytes(data, store, SMALL).cid
        written.set()
        gc_waiting.wait(10)
        time.sleep(0.3)  # the gc is blocked on our session meanwhile
        store.pin(cid, check=False)
    result.put(str(cid))


def test_gc_waits_for_a_writer_in_another_process(tmp_path, rng):
    store = LocalStore(tmp_path)
    garbage = raw_block(b"old garbage")
    store.put(*garbage)
    data = rng.randbytes(4000)
    written, gc_waiting, result = MP.Event(), MP.Event(), MP.Queue()
    proc = MP.Process(target=_import_and_pin_slowly, args=(str(tmp_path), data, written, gc_waiting, result))
    proc.start()
    try:
        assert written.wait(10)
        # Without a pin yet, the writer's blocks are unreachable: only its session protects them.
        gc_result: list = []
        gc_thread = threading.Thread(target=lambda: gc_result.append(LocalStore(tmp_path).gc()))
        gc_thread.start()
        time.sleep(0.1)
        assert gc_thread.is_alive()  # waiting for the writer's shared lock
        gc_waiting.set()
        gc_thread.join(10)
        root = CID.decode(result.get(timeout=10))
    finally:
        proc.join(10)
    assert proc.exitcode == 0
    assert gc_result[0].removed_blocks == 1  # only the old garbage
    assert not store.has(garbage[0])
    assert store.pins() == [root]
    assert on_disk(store) == dag_multihashes(store, root)
    assert b"".join(_file_bytes(store, root)) == data


def _file_bytes(store, root):
    from torch_ipfs.unixfs.reader import UnixFSFile

    return UnixFSFile(store, root).iter_chunks()


def test_gc_timeout_while_a_writer_holds_the_lock(tmp_path):
    holder = LocalStore(tmp_path)
    with holder.writer():
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="still locked"):
            LocalStore(tmp_path).gc(timeout=0.2)
        assert time.monotonic() - t0 >= 0.2


# -- many processes ---------------------------------------------------------------------------


def _shared_blocks() -> list[tuple[CID, bytes]]:
    rnd = random.Random(7)
    return [raw_block(rnd.randbytes(rnd.randrange(1, 8192))) for _ in range(120)]


def _put_in_random_order(root: str, seed: int) -> None:
    store = LocalStore(root)
    blocks = _shared_blocks()
    random.Random(seed).shuffle(blocks)
    half = len(blocks) // 2
    for cid, data in blocks[:half]:
        store.put(cid, data)
    store.put_many(blocks[half:])
    own = raw_block(f"only process {seed}".encode())
    store.put(*own)


def test_concurrent_writers_end_with_a_consistent_store(tmp_path):
    procs = [MP.Process(target=_put_in_random_order, args=(str(tmp_path), seed)) for seed in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    store = LocalStore(tmp_path)
    blocks = _shared_blocks()
    expected = {c.multihash for c, _ in blocks} | {
        CID.compute(f"only process {s}".encode(), RAW).multihash for s in range(6)
    }
    assert on_disk(store) == expected
    assert store.verify() == []
    assert all(store.get(c) == d for c, d in blocks)
    assert tmp_files(store) == []


def test_store_survives_pickling_and_fork(tmp_path):
    store = LocalStore(tmp_path)
    with store.writer():
        clone = pickle.loads(pickle.dumps(store))
        assert clone.root == store.root and clone._depth == 0
    clone.put(*raw_block(b"from the clone"))
    assert store.has(CID.compute(b"from the clone", RAW))


# -- bad repositories -------------------------------------------------------------------------


def test_a_file_is_not_a_store(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        LocalStore(target)


def test_a_foreign_sharding_is_refused(tmp_path):
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "SHARDING").write_text("/repo/flatfs/shard/v1/prefix/4\n")
    with pytest.raises(StoreError, match="sharding"):
        LocalStore(tmp_path)


def _check_read_only(root: Path, cid, data: bytes) -> None:
    ro = LocalStore(root)
    assert ro.readonly and ro.get(cid) == data
    with pytest.raises(StoreError, match="read-only"):
        ro.put(*raw_block(b"new"))


def _set_tree_mode(root: Path, dir_mode: int, file_mode: int, owner: int | None = None) -> None:
    for path in [root, *root.rglob("*")]:
        if owner is not None:
            os.chown(path, owner, owner)
        os.chmod(path, dir_mode if path.is_dir() else file_mode)


def test_an_unwritable_store_opens_read_only(tmp_path):
    """A store nobody may write (``chmod -R a-w``, a read-only mount) still serves reads."""
    cid, data = raw_block(b"kept")
    if os.geteuid() != 0:
        LocalStore(tmp_path).put(cid, data)
        _set_tree_mode(tmp_path, 0o555, 0o444)
        try:
            _check_read_only(tmp_path, cid, data)
        finally:
            _set_tree_mode(tmp_path, 0o755, 0o644)
        return
    # Root can write anywhere: give the store to nobody (65534), make it read-only, and
    # check it from a forked child that has dropped to nobody.
    root = Path(tempfile.mkdtemp(prefix="ro-store-", dir="/tmp"))
    try:
        LocalStore(root).put(cid, data)
        _set_tree_mode(root, 0o555, 0o444, owner=65534)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            status = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                _check_read_only(root, cid, data)
                status = 0
            except BaseException:
                traceback.print_exc()  # shown with the parent's failure
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the read-only checks failed as nobody"
    finally:
        _set_tree_mode(root, 0o755, 0o644)
        shutil.rmtree(root)


# -- config -----------------------------------------------------------------------------------


def test_default_home_follows_the_environment():
    assert default_home({"TORCH_IPFS_HOME": "/data/ipfs"}) == Path("/data/ipfs")
    assert default_home({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/torch_ipfs")
    assert default_home({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "torch_ipfs"
    assert default_home({}) == Path.home() / ".cache" / "torch_ipfs"


def test_settings_from_env():
    s = Settings.from_env(
        {
            "TORCH_IPFS_HOME": "/h",
            "TORCH_IPFS_API": " /ip4/127.0.0.1/tcp/5001 ",
            "TORCH_IPFS_GATEWAYS": "http://127.0.0.1:8080, ,http://127.0.0.1:8081",
            "TORCH_IPFS_CACHE_BYTES": "512MiB",
        }
    )
    assert s == Settings(
        Path("/h"), "/ip4/127.0.0.1/tcp/5001", ["http://127.0.0.1:8080", "http://127.0.0.1:8081"], 512 * 2**20
    )
    empty = Settings.from_env({"TORCH_IPFS_API": ""})
    assert empty.api is None and empty.gateways == [] and empty.cache_bytes == DEFAULT_CACHE_BYTES
    with pytest.raises(ValueError, match="TORCH_IPFS_CACHE_BYTES"):
        Settings.from_env({"TORCH_IPFS_CACHE_BYTES": "lots"})


@pytest.mark.parametrize(
    ("text", "value"),
    [("1048576", 1048576), ("10G", 10**10), ("10GB", 10**10), ("512MiB", 512 * 2**20), ("4Ki", 4096), (7, 7)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "10 parsecs", "i"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_hello_world_key_is_what_flatfs_names_it():
    mh = b"\x12\x20" + hashlib.sha256(HELLO).digest()
    from torch_ipfs.sources.local import key_multihash, multihash_key, shard_of

    assert multihash_key(mh) == HELLO_KEY and key_multihash(HELLO_KEY) == mh and shard_of(HELLO_KEY) == "32"
    assert CID.decode(HELLO_V0).codec == DAG_PB
