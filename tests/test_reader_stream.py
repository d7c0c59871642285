"""Streaming reads from a LocalStore: the get_into / recycled-buffer path."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections import Counter

import pytest

from torch_ipfs.dagpb import decode_node
from torch_ipfs.errors import BlockNotFoundError, IntegrityError
from torch_ipfs.sources.base import BlockSource
from torch_ipfs.sources.local import LocalStore
from torch_ipfs.unixfs.importer import ImportOptions, import_bytes
from torch_ipfs.unixfs.reader import PREFETCH_THREADS, RAMP_START, UnixFSFile, cpu_bound_parts

SIZE = 1_500_000  # over STREAM_THRESHOLD, so large reads stream too


@pytest.fixture(params=[0, 1], ids=["v0-dagpb-leaves", "v1-raw-leaves"])
def stored(request, tmp_path):
    store = LocalStore(tmp_path / "repo")
    data = random.Random(request.param).randbytes(SIZE)
    opts = ImportOptions(cid_version=request.param, chunker="size-4096", max_links=8)
    root = import_bytes(data, store, opts).cid
    return store, root, data


def test_every_sequential_api_returns_the_file(stored) -> None:
    store, root, data = stored
    f = UnixFSFile(store, root, prefetch=8)
    assert b"".join(f.iter_chunks()) == data
    assert b"".join(f.iter_chunks(12345, 1_000_000)) == data[12345:1_012_345]
    assert f.read() == data
    buf = bytearray(SIZE + 10)
    assert f.read_into(7, buf) == SIZE - 7 and buf[:SIZE - 7] == data[7:]
    with f.open() as fh:
        assert fh.read() == data
    for piece in (4095, 4096, 65536, 1 << 20):
        with f.open(buffer_size=8192) as fh:
            got = bytearray()
            while chunk := fh.read(piece):
                got += chunk
        assert got == data, piece
    with f.open() as fh:
        view = bytearray(300_001)
        got = bytearray()
        while n := fh.readinto(view):
            got += view[:n]
        assert got == data


def test_seeks_between_sequential_runs(stored) -> None:
    store, root, data = stored
    f = UnixFSFile(store, root, prefetch=4)
    fh = f.open(buffer_size=4096)
    raw = fh.raw
    rng = random.Random(3)
    pos = 0
    for _ in range(60):
        if rng.random() < 0.3:
            pos = rng.randrange(SIZE + 10)
            raw.seek(pos)
        n = rng.choice([1, 100, 4096, 10_000, 200_000])
        buf = bytearray(n)
        got = raw.readinto(buf)
        assert bytes(buf[:got]) == data[pos:pos + n], (pos, n)
        pos += got
        assert raw.tell() == pos
    raw.seek(100)
    assert raw.readall() == data[100:]
    raw.close()
    with pytest.raises(ValueError):
        raw.readinto(bytearray(1))


def test_stopping_early_leaves_nothing_running(stored) -> None:
    store, root, data = stored
    f = UnixFSFile(store, root, prefetch=16)
    chunks = f.iter_chunks()
    first = next(chunks)
    assert first == data[:len(first)]
    chunks.close()
    with f.open() as fh:
        fh.read(10)
        fh.read(300_000)
    assert f.read_range(SIZE - 3, 10) == data[-3:]


def test_tampered_block_on_disk_is_an_integrity_error_while_streaming(stored) -> None:
    store, root, data = stored
    f = UnixFSFile(store, root)
    # damage a leaf in the middle: the last link of the root's middle child, down to a leaf
    cid = root
    while True:
        node = decode_node(store.get(cid)) if cid.codec == 0x70 else None
        if node is None or not node.links:
            break
        cid = node.links[len(node.links) // 2].cid
    path = store._block_path(cid.multihash)
    with open(path, "r+b") as fh:
        fh.seek(-1, io.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, io.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(IntegrityError) as e:
        b"".join(f.iter_chunks())
    assert e.value.cid == cid
    fh = f.open()
    with pytest.raises(IntegrityError):
        while fh.read(100_000):
            pass
    with pytest.raises(IntegrityError):  # not a silent short read after the failure
        fh.read(100_000)
    with pytest.raises(IntegrityError):
        f.open().read()
    with pytest.raises(IntegrityError):
        f.read_into(0, bytearray(SIZE))


def test_missing_block_is_not_a_short_read(stored) -> None:
    store, root, data = stored
    node = decode_node(store.get(root))
    victim = node.links[-1].cid
    os.unlink(store._block_path(victim.multihash))
    f = UnixFSFile(store, root)
    with f.open() as fh:
        fh.read(1000)
        with pytest.raises(BlockNotFoundError):
            while fh.read(1 << 20):
                pass
        with pytest.raises(BlockNotFoundError):
            fh.read(1 << 20)


def test_streaming_in_a_forked_child(stored) -> None:
    store, root, data = stored
    f = UnixFSFile(store, root)
    assert b"".join(f.iter_chunks()) == data  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:
        ok = b"".join(UnixFSFile(store, root).iter_chunks()) == data
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class RecordingSource(BlockSource):
    """The store, recording the CIDs of every ``get_many`` call (a backend that says
    whether its ``get_many`` fetches in parallel by itself, as remote sources do), each
    block taking ``delay`` seconds (a slow disk)."""

    def __init__(self, store: LocalStore, parallel: bool, window: int, delay: float = 0.0) -> None:
        self.store = store
        self.parallel_get_many = parallel
        self.prefetch_window = window
        self.delay = delay
        self.calls: list[list] = []
        self._lock = threading.Lock()

    def _get_raw(self, cid):
        if self.delay:
            time.sleep(self.delay)
        return self.store.get(cid)

    def get_many(self, cids):
        cids = list(cids)
        with self._lock:
            self.calls.append(cids)
        return super().get_many(cids)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel-source", "local-source"])
def test_a_stream_asks_for_a_few_blocks_first_then_for_more(tmp_path, parallel) -> None:
    store = LocalStore(tmp_path / "repo")
    data = random.Random(7).randbytes(SIZE)
    root = import_bytes(data, store, ImportOptions(cid_version=1, chunker="size-16384")).cid
    leaves = [link.cid for link in decode_node(store.get(root)).links]  # one level: 92 leaves
    source = RecordingSource(store, parallel, window=32)
    assert b"".join(UnixFSFile(source, root).iter_chunks()) == data
    asked = [cid for call in source.calls for cid in call]
    assert Counter(asked) == Counter(leaves)  # every block once
    parts = cpu_bound_parts()
    first_round = source.calls[: 1 if parallel else min(parts, RAMP_START)]
    assert [cid for call in first_round for cid in call][:1] == leaves[:1]
    assert sum(len(call) for call in first_round) == RAMP_START
    sizes = [len(call) for call in source.calls]
    if parallel:
        # a source that fetches in parallel gets each batch whole, in the order needed
        assert asked == leaves and max(sizes) <= 32
    else:
        # each batch dealt round-robin into one get_many per CPU (at most 4 parts)
        assert max(sizes) <= -(-32 // parts)


def _stream_calls(
    tmp_path, delay: float, consume: float, window: int = 8, parallel: bool = False
) -> tuple[list[list], list, dict]:
    """One local-source stream over 92 leaves, each block taking ``delay`` s to fetch and
    ``consume`` s to use: its get_many calls, the leaves in file order, and for each leaf
    how many blocks the reader had used when it was asked for."""
    store = LocalStore(tmp_path / "repo")
    data = random.Random(8).randbytes(SIZE)
    root = import_bytes(data, store, ImportOptions(cid_version=1, chunker="size-16384")).cid
    leaves = [link.cid for link in decode_node(store.get(root)).links]
    used = [0]
    asked_at: dict = {}

    class Source(RecordingSource):
        def get_many(self, cids):
            cids = list(cids)
            asked_at.update((cid, used[0]) for cid in cids)
            return super().get_many(cids)

    source = Source(store, parallel, window=window, delay=delay)
    got = []
    for piece in UnixFSFile(source, root).iter_chunks():
        got.append(bytes(piece))
        time.sleep(consume)
        used[0] += 1
    assert b"".join(got) == data
    assert Counter(cid for call in source.calls for cid in call) == Counter(leaves)  # each once
    return source.calls, leaves, asked_at


def test_a_stream_asks_for_its_last_blocks_before_the_reader_reaches_them(tmp_path) -> None:
    # a reader slower than the fetching: every block after the first is asked for while
    # the reader is still on an earlier one, the stream's last blocks too (they used to
    # wait until the reader got to them: a stall, a round trip on a remote source)
    calls, leaves, asked_at = _stream_calls(tmp_path, delay=0.0, consume=0.002)
    late = [i for i, cid in enumerate(leaves) if i and asked_at[cid] >= i]
    assert late == []


def test_a_reader_that_never_waits_gets_one_more_block_ahead_per_block_read(tmp_path) -> None:
    # a remote source (parallel get_many) whose blocks come at once, a reader that takes
    # 10 ms with each: after k blocks read the window is RAMP_START + k, so block i is not
    # asked for before (i - RAMP_START) // 2 were read (doubling per block read, as from a
    # local source, asked for 32 ahead after three)
    calls, leaves, asked_at = _stream_calls(tmp_path, delay=0.0, consume=0.01, window=32, parallel=True)
    early = {i: asked_at[cid] for i, cid in enumerate(leaves) if asked_at[cid] < (i - RAMP_START) // 2}
    assert early == {}
    assert all(asked_at[cid] == 0 for cid in leaves[:RAMP_START])
    assert max(i - asked_at[cid] for i, cid in enumerate(leaves)) > 16  # it did grow
    # a local source doubles at each block read: block 20 is asked for after a few
    _, leaves, asked_at = _stream_calls(tmp_path / "local", delay=0.0, consume=0.01, window=32)
    assert asked_at[leaves[20]] <= 4


def test_a_reader_that_waits_doubles_the_window(tmp_path) -> None:
    # each block takes 10 ms to come and the reader waits for every one: the window
    # doubles per wait, so blocks 20 and on are asked for before the reader has used 8
    # (growing by one per block read, block 20 would wait for the 8th)
    calls, leaves, asked_at = _stream_calls(tmp_path, delay=0.01, consume=0.0, window=32, parallel=True)
    assert min(asked_at[cid] for cid in leaves[20:32]) < 8
    assert all(asked_at[cid] == 0 for cid in leaves[:RAMP_START])


def test_a_local_stream_splits_its_batches_one_part_per_cpu(tmp_path) -> None:
    allowed = os.sched_getaffinity(0)
    try:
        # the affinity of the calling thread, which is the one scheduling the stream
        os.sched_setaffinity(0, {min(allowed)})
        assert cpu_bound_parts() == 1
        calls, leaves, _ = _stream_calls(tmp_path, delay=0.001, consume=0.0)
    finally:
        os.sched_setaffinity(0, allowed)
    # one CPU: however long the reader waits, each batch is one get_many, so the blocks
    # are asked for in file order
    assert [cid for call in calls for cid in call] == leaves
    assert cpu_bound_parts() == min(PREFETCH_THREADS, len(allowed))
