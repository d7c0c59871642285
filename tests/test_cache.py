"""The verified read-through disk cache: hits and misses, the byte limit and LRU order,
damaged entries, lying sources, and real processes sharing one cache directory."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from torch_ipfs.cid import CID, RAW, verify_block
from torch_ipfs.errors import BlockNotFoundError, IntegrityError
from torch_ipfs.sources import BlockSource, CachedSource, LocalStore, MemoryStore
from torch_ipfs.sources.local import key_multihash

MP = multiprocessing.get_context("fork")  # what DataLoader workers use on Linux
KIB = 1024


def raw_block(data: bytes) -> tuple[CID, bytes]:
    return CID.compute(data, RAW), data


def memory_source(blocks: Iterable[tuple[CID, bytes]]) -> MemoryStore:
    store = MemoryStore()
    store.put_many(blocks)
    return store


def entries(cache_dir: Path) -> dict[bytes, Path]:
    """Cache entries on disk by multihash (temp files and the lock file excluded)."""
    out = {}
    for shard in cache_dir.iterdir():
        if shard.is_dir() and shard.name not in ("tmp", "inflight"):
            for f in shard.iterdir():
                out[key_multihash(f.name)] = f
    return out


def disk_bytes(cache_dir: Path) -> int:
    """Every byte the cache has on disk except its lock file: entries and temp files."""
    total = 0
    for dirpath, _, files in os.walk(cache_dir):
        for name in files:
            if name != "lock":
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
    return total


class RecordingSource(BlockSource):
    """A real source (a MemoryStore) that records the batches it is asked for."""

    name = "recording source"

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.batches: list[list[CID]] = []
        self.singles: list[CID] = []

    def _get_raw(self, cid: CID) -> bytes:
        self.singles.append(cid)
        return self.store.get(cid)

    def get_many(self, cids: Iterable[CID]) -> Iterator[tuple[CID, bytes]]:
        batch = list(cids)
        self.batches.append(batch)
        for cid in batch:
            yield cid, self.store.get(cid)


class LyingSource(BlockSource):
    """A broken backend that skips verification and returns the wrong bytes."""

    name = "lying source"

    def _get_raw(self, cid: CID) -> bytes:
        return b"not the block you asked for"

    def get(self, cid: CID) -> bytes:
        return self._get_raw(cid)


# -- basics -----------------------------------------------------------------------------------


def test_miss_then_hit_is_served_from_disk(tmp_path):
    cid, data = raw_block(b"some block")
    source = memory_source([(cid, data)])
    cache = CachedSource(source, tmp_path, max_bytes=1 << 20)
    assert cache.get(cid) == data
    assert (cache.hits, cache.misses) == (0, 1)
    source.blocks.clear()  # the source forgets it: only the cache can answer now
    assert cache.get(cid) == data
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.has(cid)
    assert list(entries(tmp_path)) == [cid.multihash]
    stats = cache.stats()
    assert (stats.bytes_written, stats.cached_bytes, stats.evictions, stats.dropped) == (10, 10, 0, 0)


def test_default_directory_is_under_torch_ipfs_home(_isolated_home):
    cid, data = raw_block(b"x")
    cache = CachedSource(memory_source([(cid, data)]), max_bytes=1000)
    cache.get(cid)
    assert cache.cache_dir == Path(_isolated_home) / "cache"
    assert list(entries(cache.cache_dir)) == [cid.multihash]


def test_v0_and_v1_share_an_entry_and_identity_is_local(tmp_path):
    cid, data = raw_block(b"shared")
    other = CID(1, 0x70, cid.multihash)  # same multihash, other codec: same bytes
    source = memory_source([(cid, data)])
    cache = CachedSource(source, tmp_path, max_bytes=1000)
    cache.get(cid)
    source.blocks.clear()
    assert cache.get(other) == data
    ident = CID.identity(b"inline")
    assert cache.get(ident) == b"inline"
    assert len(entries(tmp_path)) == 1


def test_missing_everywhere_raises_the_sources_error(tmp_path):
    cache = CachedSource(MemoryStore(), tmp_path, max_bytes=1000)
    cid, _ = raw_block(b"nowhere")
    with pytest.raises(BlockNotFoundError):
        cache.get(cid)
    assert not cache.has(cid)
    assert entries(tmp_path) == {}


def test_get_many_sends_all_misses_in_one_call_and_yields_in_order(tmp_path):
    blocks = [raw_block(bytes([i]) * 100) for i in range(10)]
    source = RecordingSource(memory_source(blocks))
    cache = CachedSource(source, tmp_path, max_bytes=1 << 20)
    for cid, _ in blocks[:4]:
        cache.get(cid)
    source.batches.clear()
    source.singles.clear()
    ident = CID.identity(b"id")
    order = [blocks[5][0], blocks[0][0], ident, blocks[7][0], blocks[5][0], blocks[2][0], blocks[9][0]]
    got = list(cache.get_many(order))
    assert [c for c, _ in got] == order
    expected = dict(blocks) | {ident: b"id"}
    assert all(data == expected[c] for c, data in got)
    assert source.batches == [[blocks[5][0], blocks[7][0], blocks[9][0]]]
    assert source.singles == []
    assert cache.hits == 2 and cache.misses == 4 + 3
    assert set(entries(tmp_path)) == {blocks[i][0].multihash for i in (0, 1, 2, 3, 5, 7, 9)}


# -- never cache or serve unverified bytes ---------------------------------------------------


def test_a_lying_source_is_caught_before_anything_is_cached(tmp_path):
    cid, _ = raw_block(b"the real block")
    cache = CachedSource(LyingSource(), tmp_path, max_bytes=1000)
    with pytest.raises(IntegrityError):
        cache.get(cid)
    with pytest.raises(IntegrityError):
        list(cache.get_many([cid]))
    assert entries(tmp_path) == {}
    assert os.listdir(tmp_path / "tmp") == []


def test_a_damaged_entry_is_dropped_and_fetched_again(tmp_path):
    cid, data = raw_block(b"A" * 1000)
    source = memory_source([(cid, data)])
    cache = CachedSource(source, tmp_path, max_bytes=1 << 20)
    cache.get(cid)
    path = entries(tmp_path)[cid.multihash]
    path.write_bytes(b"A" * 999 + b"B")  # bit rot / tampering
    assert cache.get(cid) == data
    assert (cache.dropped, cache.misses) == (1, 2)
    assert path.read_bytes() == data  # rewritten with verified bytes
    path.write_bytes(b"A" * 10)  # truncated, and the source no longer has it
    source.blocks.clear()
    with pytest.raises(BlockNotFoundError):
        cache.get(cid)  # never the bad bytes
    assert cid.multihash not in entries(tmp_path)


def test_leftover_temp_files_are_never_served_and_cleaned(tmp_path):
    cid, data = raw_block(b"B" * 500)
    CachedSource(MemoryStore(), tmp_path, max_bytes=1000)
    junk = tmp_path / "tmp" / "999.feedface.tmp"
    junk.write_bytes(data[:100])
    cache = CachedSource(memory_source([(cid, data)]), tmp_path, max_bytes=1000)  # startup cleans
    assert not junk.exists()
    assert cache.get(cid) == data


# -- the byte limit ---------------------------------------------------------------------------


def test_limit_is_never_exceeded_and_eviction_is_lru(tmp_path):
    blocks = [raw_block(random.Random(i).randbytes(64 * KIB)) for i in range(40)]
    limit = 1 << 20  # 16 blocks
    cache = CachedSource(memory_source(blocks), tmp_path, max_bytes=limit)
    hot = blocks[0][0]
    for i, (cid, data) in enumerate(blocks):
        assert cache.get(cid) == data
        assert cache.get(hot) == blocks[0][1]  # keep the first block recently used
        assert disk_bytes(tmp_path) <= limit
        assert cache.cached_bytes() == disk_bytes(tmp_path)
        if i < 16:
            assert cache.evictions == 0
    kept = set(entries(tmp_path))
    assert hot.multihash in kept
    assert blocks[1][0].multihash not in kept  # least recently used went first
    assert blocks[-1][0].multihash in kept
    assert cache.evictions == 40 - len(kept)
    assert len(kept) >= 14  # evicts to the low-water mark (90%), not to empty


def test_a_block_larger_than_the_limit_is_served_uncached(tmp_path):
    cid, data = raw_block(b"x" * 5000)
    cache = CachedSource(memory_source([(cid, data)]), tmp_path, max_bytes=4096)
    assert cache.get(cid) == data
    assert entries(tmp_path) == {}


def test_a_stale_total_is_recounted(tmp_path):
    blocks = [raw_block(bytes([i]) * 1000) for i in range(6)]
    cache = CachedSource(memory_source(blocks), tmp_path, max_bytes=5000)
    for cid, _ in blocks[:4]:
        cache.get(cid)
    for path in list(entries(tmp_path).values())[:2]:
        path.unlink()  # removed behind the cache's back: the total now over-counts
    cache.get(blocks[4][0])
    assert cache.cached_bytes() == 5000  # the running total: 2000 more than on disk
    cache.get(blocks[5][0])  # 6000 > 5000 by the total: recount before evicting
    assert cache.evictions == 0  # the recount found room; nothing needed to go
    assert cache.cached_bytes() == 4000 == disk_bytes(tmp_path)


# -- processes sharing one cache --------------------------------------------------------------

N_BLOCKS, BLOCK, LIMIT = 40, 64 * KIB, 1 << 20


def _hammer_blocks() -> list[tuple[CID, bytes]]:
    return [raw_block(random.Random(1000 + i).randbytes(BLOCK)) for i in range(N_BLOCKS)]


def _hammer(origin: str, cache_dir: str, seed: int, out) -> None:
    try:
        expected = dict(_hammer_blocks())
        cids = list(expected)
        cache = CachedSource(LocalStore(origin), cache_dir, max_bytes=LIMIT)
        rnd = random.Random(seed)
        for _ in range(150):
            if rnd.random() < 0.2:
                batch = rnd.sample(cids, 6)
                for cid, data in cache.get_many(batch):
                    assert data == expected[cid]
            else:
                cid = rnd.choice(cids[: rnd.choice((8, 40))])  # some blocks are hot
                assert cache.get(cid) == expected[cid]
        out.put((seed, "ok", cache.hits, cache.misses, cache.evictions))
    except BaseException as e:  # report every failure to the parent, typed
        out.put((seed, f"{type(e).__name__}: {e}", 0, 0, 0))


def test_eight_processes_hammering_one_small_cache(tmp_path):
    origin = LocalStore(tmp_path / "origin")
    origin.put_many(_hammer_blocks())
    cache_dir = tmp_path / "cache"
    CachedSource(origin, cache_dir, max_bytes=LIMIT)
    out = MP.Queue()
    procs = [MP.Process(target=_hammer, args=(str(origin.root), str(cache_dir), s, out)) for s in range(8)]
    for p in procs:
        p.start()
    peak = samples = 0
    lock_fd = os.open(cache_dir / "lock", os.O_RDWR)
    try:
        while any(p.is_alive() for p in procs):
            # A directory walk is not a snapshot (a file evicted after it was counted and one
            # written after it are both seen): count under the writers' lock, where no insert
            # or eviction is half done. Readers take no lock and keep reading meanwhile.
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                peak = max(peak, disk_bytes(cache_dir))
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
            samples += 1
            time.sleep(0.002)
    finally:
        os.close(lock_fd)
    for p in procs:
        p.join(30)
    results = [out.get(timeout=10) for _ in procs]
    assert [p.exitcode for p in procs] == [0] * 8
    assert sorted(r[:2] for r in results) == [(s, "ok") for s in range(8)]
    assert samples > 10 and LIMIT - 2 * BLOCK <= peak <= LIMIT + BLOCK  # full, never over by > 1 block
    assert disk_bytes(cache_dir) <= LIMIT
    assert sum(r[2] for r in results) > 0 and sum(r[4] for r in results) > 0  # hits and evictions
    for mh, path in entries(cache_dir).items():  # everything left is whole and correct
        verify_block(CID(1, RAW, mh), path.read_bytes())


def _cache_forever(cache_dir: str, ready) -> None:
    blocks = [raw_block(random.Random(i).randbytes(2 << 20)) for i in range(6)]
    cache = CachedSource(memory_source(blocks), cache_dir, max_bytes=4 << 20)
    ready.set()
    while True:
        for path in entries(Path(cache_dir)).values():
            path.unlink()  # keep it writing
        for cid, _ in blocks:
            cache.get(cid)


def test_kill_9_mid_write_never_leaves_a_servable_bad_block(tmp_path):
    ready = MP.Event()
    proc = MP.Process(target=_cache_forever, args=(str(tmp_path), ready))
    proc.start()
    try:
        assert ready.wait(10)
        deadline = time.monotonic() + 3.0
        saw_temp_file = False
        while time.monotonic() < deadline and not saw_temp_file:
            saw_temp_file = bool(os.listdir(tmp_path / "tmp"))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    assert saw_temp_file, "never saw the writer mid-write (a temp file in tmp/)"
    for mh, path in entries(tmp_path).items():
        verify_block(CID(1, RAW, mh), path.read_bytes())
    # An empty source: the cache can only answer from disk, and only with verified bytes.
    cache = CachedSource(MemoryStore(), tmp_path, max_bytes=4 << 20)
    assert os.listdir(tmp_path / "tmp") == []  # the dead writer's temp file is gone
    for mh in entries(tmp_path):
        cid = CID(1, RAW, mh)
        verify_block(cid, cache.get(cid))
    assert disk_bytes(tmp_path) <= 4 << 20


# -- single flight ------------------------------------------------------------------------------


class SlowCountingSource(BlockSource):
    """A source that takes ``delay`` seconds per block and counts what it was asked."""

    name = "slow source"

    def __init__(self, store: MemoryStore, delay: float) -> None:
        self.store, self.delay = store, delay
        self.asked: list[CID] = []

    def _get_raw(self, cid: CID) -> bytes:
        self.asked.append(cid)
        time.sleep(self.delay)
        return self.store.get(cid)


def test_threads_missing_one_block_together_fetch_it_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cid, data = raw_block(b"wanted by every thread at once" * 100)
    source = SlowCountingSource(memory_source([(cid, data)]), delay=0.3)
    caches = [CachedSource(source, tmp_path / "cache", 10**7) for _ in range(4)]  # one per "worker"
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: caches[i % 4].get(cid), range(8)))
        more = list(pool.map(lambda i: list(caches[i % 4].get_many([cid])), range(8)))
    assert got == [data] * 8 and more == [[(cid, data)]] * 8
    assert source.asked == [cid]
    assert sum(c.coalesced for c in caches) == 7


def _claim_and_hang(cache_dir: str, cid_bytes: bytes) -> None:
    """A reader that fetches from a source that never answers (a child process)."""
    cid = CID.decode(cid_bytes)
    hanging = SlowCountingSource(MemoryStore(), delay=3600)
    CachedSource(hanging, cache_dir, 10**7).get(cid)


def _wait_for_claim(cache_dir: Path) -> None:
    deadline = time.monotonic() + 30
    while not any((cache_dir / "inflight").iterdir()):
        assert time.monotonic() < deadline, "the child never claimed the block"
        time.sleep(0.01)


def test_a_reader_killed_mid_fetch_blocks_nobody(tmp_path):
    cid, data = raw_block(b"the killed reader was fetching this" * 50)
    cache_dir = tmp_path / "cache"
    CachedSource(MemoryStore(), cache_dir, 10**7)  # create the directory
    child = MP.Process(target=_claim_and_hang, args=(str(cache_dir), cid.to_bytes()))
    child.start()
    try:
        _wait_for_claim(cache_dir)
        # While it hangs, a waiter gives up after its timeout and fetches the block itself.
        source = SlowCountingSource(memory_source([(cid, data)]), delay=0)
        impatient = CachedSource(source, cache_dir, 10**7, inflight_timeout=0.5)
        start = time.monotonic()
        assert impatient.get(cid) == data
        assert 0.5 <= time.monotonic() - start < 5
        os.unlink(next(iter(entries(cache_dir).values())))  # uncache it again
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        # Killed with -9: its claim dies with it; a patient waiter does not wait at all.
        patient = CachedSource(source, cache_dir, 10**7, inflight_timeout=60)
        start = time.monotonic()
        assert patient.get(cid) == data
        assert time.monotonic() - start < 2
        assert source.asked == [cid, cid]
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join()


def test_readers_waiting_for_each_other_never_stall(tmp_path):
    """Reader A fetches p and q in one batch, q first, while another reader holds q; a
    third waits for p. A must cache p (and release it) while it waits for q, else the
    readers wait on each other until the in-flight timeout."""
    import threading

    (p, p_data), (q, q_data) = raw_block(b"p" * 3000), raw_block(b"q" * 3000)
    source = SlowCountingSource(memory_source([(p, p_data), (q, q_data)]), delay=0.5)
    a = CachedSource(source, tmp_path / "cache", 10**7, inflight_timeout=20)
    b = CachedSource(source, tmp_path / "cache", 10**7, inflight_timeout=20)
    held = b._claim(q.multihash, wait=False)  # someone is fetching q right now
    assert held is not None
    result: list = []
    reader = threading.Thread(target=lambda: result.extend(a.get_many([q, p])))
    reader.start()
    from torch_ipfs.sources.local import multihash_key

    claim_of_p = tmp_path / "cache" / "inflight" / multihash_key(p.multihash)
    deadline = time.monotonic() + 10
    while not claim_of_p.exists():  # A has claimed p and now waits for q
        assert time.monotonic() < deadline
        time.sleep(0.005)
    start = time.monotonic()
    assert b.get(p) == p_data  # A fetched p; it must not sit on its claim while waiting for q
    assert time.monotonic() - start < 5
    b._release(q.multihash, held)
    reader.join(timeout=30)
    assert result == [(q, q_data), (p, p_data)]
    assert sorted(map(str, source.asked)) == sorted([str(p), str(q)])  # each fetched once
